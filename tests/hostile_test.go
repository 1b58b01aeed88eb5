package tests

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

func TestRateLimit(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--control-rate-limit", "5", "--control-rate-burst", "5")
	c := srv.connect(t, "flooder")
	for i := range 20 {
		c.sendJSON(map[string]any{"type": "ping", "id": i})
	}
	pongs, limited := 0, 0
	for range 20 {
		m := c.expect2("pong", "error")
		if m["type"] == "error" {
			if m["code"] != "rate_limited" || m["error"] != "Rate limit exceeded" || m["id"] == nil {
				t.Fatalf("error = %v", m)
			}
			limited++
		} else {
			pongs++
		}
	}
	if pongs < 5 || pongs > 7 || limited == 0 {
		t.Fatalf("%d pongs, %d rate_limited: want the burst of 5 through and the rest refused", pongs, limited)
	}
	time.Sleep(400 * time.Millisecond) // the bucket refills at 5/s
	c.sendJSON(map[string]any{"type": "ping", "id": "later"})
	if p := c.expect("pong"); p["id"] != "later" {
		t.Fatalf("after refilling: %v", p)
	}
}

// Publications have their own budget: a publisher over it is refused,
// while its subscribes and pings still go through.
func TestPublicationRateLimit(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "5", "--rate-burst", "5")
	c := srv.connect(t, "chatty")
	for i := range 20 {
		c.sendJSON(map[string]any{"type": "message", "channel": "chat:1", "data": i, "id": i})
	}
	published, limited := 0, 0
	for range 20 {
		if m := c.expect2("published", "error"); m["type"] == "error" {
			if m["code"] != "rate_limited" {
				t.Fatalf("error = %v", m)
			}
			limited++
		} else {
			published++
		}
	}
	if published < 5 || published > 7 || limited == 0 {
		t.Fatalf("%d published, %d rate_limited: want the burst of 5 through and the rest refused", published, limited)
	}
	c.subscribe("chat:2")
	c.sendJSON(map[string]any{"type": "ping", "id": "still"})
	c.expect("pong")
}

// With no flags, what real clients do is never refused: a page joining
// 300 channels at once, a game sending a burst of 250 inputs.
func TestDefaultLimitsFitRealClients(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := srv.connect(t, "player")
	for i := range 300 {
		c.sendJSON(map[string]any{"type": "subscribe", "channel": fmt.Sprintf("room:%d", i), "id": i})
	}
	for range 300 {
		c.expect("subscribed")
	}
	pub := srv.connect(t, "game")
	for i := range 250 {
		pub.sendJSON(map[string]any{"type": "message", "channel": "inputs:1", "data": i, "id": i})
	}
	for range 250 {
		pub.expect("published")
	}
}

// Invalid frames spend the budget too: a client cannot flood the server
// with garbage that is answered without limit.
func TestInvalidFramesCountAgainstTheRateLimit(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--control-rate-limit", "1", "--control-rate-burst", "3")
	c := srv.connect(t, "garbler")
	for range 10 {
		c.send(`{"type":"nonsense"}`)
	}
	codes := map[any]int{}
	for range 10 {
		codes[c.expect("error")["code"]]++
	}
	if codes["unknown_type"] != 3 || codes["rate_limited"] != 7 {
		t.Fatalf("answers %v: want 3 unknown_type (the burst) and 7 rate_limited", codes)
	}
}

func TestRateLimitDisconnectPolicy(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--control-rate-limit", "2", "--control-rate-burst", "2", "--rate-limit-policy", "disconnect")
	other := srv.connect(t, "calm")
	c := srv.connect(t, "flooder")
	for i := range 5 {
		if c.conn.WriteString(fmt.Sprintf(`{"type":"ping","id":%d}`, i)) != nil {
			break
		}
	}
	if code := c.expectClose(); code != 4008 {
		t.Fatalf("close code %d, want 4008", code)
	}
	other.sendJSON(map[string]any{"type": "ping", "id": 1})
	other.expect("pong")
}

func TestUserRateLimitSpansConnections(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--user-rate-limit", "1", "--user-rate-burst", "4")
	tabs := []*client{srv.connect(t, "multi"), srv.connect(t, "multi")}
	for i := range 6 {
		tabs[i%2].sendJSON(map[string]any{"type": "message", "channel": "shared:1", "data": i, "id": i})
	}
	limited := 0
	for i := range 6 {
		if m := tabs[i%2].expect2("published", "error"); m["type"] == "error" {
			limited++
		}
	}
	if limited < 1 || limited > 2 {
		t.Fatalf("%d of 6 frames refused, want 2 (burst 4 shared by both connections)", limited)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-connections-per-ip", "3", "--max-connections-per-user", "2")
	srv.connect(t, "u1")
	srv.connect(t, "u1")
	extra := srv.dial(t, "user=u1", nil, true)
	if e := extra.expect("error"); e["code"] != "too_many_connections" {
		t.Fatalf("third connection of a user: %v", e)
	}
	if code := extra.expectClose(); code != 4029 {
		t.Fatalf("close code %d, want 4029", code)
	}
	eventually(t, 5*time.Second, "the refused connection to be released", func() bool {
		return srv.metric(t, "switchboard_connections") == 2
	})
	srv.connect(t, "u2")
	_, resp, err := gws.NewClient(clientEvents{&client{closed: make(chan struct{}), frames: make(chan []byte, 1)}}, &gws.ClientOption{Addr: srv.wsURL("user=u3")})
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth connection from one address: want HTTP 429, got %v", err)
	}
}

func TestHeartbeats(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--ping-interval", "100ms", "--idle-timeout", "500ms")
	silent := srv.connect(t, "silent") // the test client never answers pings
	chatty := srv.connect(t, "chatty")
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; time.Since(start) < 1500*time.Millisecond; i++ {
			if chatty.conn.WriteString(fmt.Sprintf(`{"type":"ping","id":%d}`, i)) != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if code := silent.expectClose(); code != 4011 {
		t.Fatalf("silent connection: close code %d, want 4011", code)
	}
	if elapsed := time.Since(start); elapsed < 400*time.Millisecond {
		t.Fatalf("closed after %s, before the idle timeout", elapsed)
	}
	<-done
	select {
	case <-chatty.closed:
		t.Fatal("a connection sending application pings was closed as idle")
	default:
	}
}

func TestSizeLimits(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-frame-bytes", "2048", "--max-data-bytes", "1024", "--max-subscriptions", "2", "--max-channel-bytes", "10")
	c := srv.connect(t, "sizes")
	c.subscribe("a:1")
	c.subscribe("a:2")
	c.sendJSON(map[string]any{"type": "subscribe", "channel": "a:3", "id": 3})
	if e := c.expect("error"); e["code"] != "too_many_subscriptions" || e["id"] != float64(3) {
		t.Fatalf("third subscription: %v", e)
	}
	c.sendJSON(map[string]any{"type": "subscribe", "channel": "a:1"}) // already held: fine
	c.expect("subscribed")
	c.sendJSON(map[string]any{"type": "subscribe", "channel": "elevenchars"})
	if e := c.expect("error"); e["code"] != "invalid_channel" {
		t.Fatalf("long channel: %v", e)
	}
	c.sendJSON(map[string]any{"type": "message", "channel": "a:1", "data": strings.Repeat("d", 1500)})
	if e := c.expect("error"); e["code"] != "data_too_large" {
		t.Fatalf("large data: %v", e)
	}
	c.sendJSON(map[string]any{"type": "message", "channel": "a:1", "data": strings.Repeat("d", 3000)})
	if code := c.expectClose(); code != 1009 {
		t.Fatalf("oversized frame: close code %d, want 1009", code)
	}
}

// One connection floods the broker with every kind of bad input while
// another keeps publishing and receiving correctly.
func TestFloodDoesNotDisturbOthers(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-frame-bytes", "65536", "--rate-limit", "50", "--rate-burst", "50")
	victim := srv.connect(t, "victim")
	victim.subscribe("calm:1")

	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	attacks := map[string]func(c *client) error{
		"thousands of frames": func(c *client) error {
			for i := range 5000 {
				if err := c.conn.WriteString(fmt.Sprintf(`{"type":"message","channel":"calm:1","data":%d}`, i)); err != nil {
					return nil // cut off: fine
				}
			}
			return nil
		},
		"garbage": func(c *client) error {
			for _, f := range []string{"{", "[]", `{"type":"x"}`, `{"type":"message","channel":"calm:1","data":` + deep + `}`, deep} {
				if err := c.conn.WriteString(f); err != nil {
					return nil
				}
			}
			return nil
		},
		"binary": func(c *client) error {
			for range 100 {
				if c.conn.WriteMessage(gws.OpcodeBinary, []byte{0xff, 0, 1}) != nil {
					return nil
				}
			}
			return nil
		},
		"oversized frame": func(c *client) error {
			_ = c.conn.WriteString(strings.Repeat("x", 70000))
			return nil
		},
		"invalid UTF-8": func(c *client) error {
			_ = c.conn.WriteMessage(gws.OpcodeText, []byte("{\"type\":\"ping\",\"id\":\"\xff\xfe\"}"))
			return nil
		},
	}
	var wg sync.WaitGroup
	attackers := map[string]*client{}
	for name, attack := range attacks {
		c := srv.connect(t, "attacker-"+strings.ReplaceAll(name, " ", "-"))
		attackers[name] = c
		wg.Add(1)
		go func() { defer wg.Done(); _ = attack(c) }()
	}
	sender := srv.connect(t, "sender")
	for i := range 100 {
		sender.sendJSON(map[string]any{"type": "message", "channel": "calm:1", "data": fmt.Sprintf("v%d", i), "id": i})
		sender.expect("published")
		time.Sleep(25 * time.Millisecond) // within its own rate limit
	}
	wg.Wait()
	for i := 0; i < 100; {
		m := victim.expect("message")
		if m["from"] != "sender" {
			continue // the flooder may publish a few within its rate limit
		}
		if m["data"] != fmt.Sprintf("v%d", i) {
			t.Fatalf("victim got %v, want v%d", m["data"], i)
		}
		i++
	}
	if code := attackers["oversized frame"].expectClose(); code != 1009 {
		t.Fatalf("oversized frame: close %d, want 1009", code)
	}
	if code := attackers["invalid UTF-8"].expectClose(); code != 1007 {
		t.Fatalf("invalid UTF-8: close %d, want 1007", code)
	}
	srv.metric(t, "switchboard_connections") // still serving HTTP
}

func TestSlowHandshakeIsCutOff(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--read-header-timeout", "300ms")
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")) // and never finish the headers
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.Copy(io.Discard, conn)
	var timeout net.Error
	if errors.As(err, &timeout) && timeout.Timeout() {
		t.Fatal("a client that never finishes its headers was not cut off")
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("cut off only after %s", time.Since(start))
	}
}

// With rate limits off, a client that writes publications as fast as it
// can is read only as fast as the broker handles them: TCP holds the rest,
// so the broker's memory stays flat, and nothing is lost.
func TestFloodingPublisherIsReadNoFasterThanServed(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--user-rate-limit", "0")
	heapBefore := srv.metric(t, "go_memstats_heap_inuse_bytes")
	flooder := srv.connect(t, "flooder")
	const publications = 200_000
	frame := `{"type":"message","channel":"flood:1","data":"` + strings.Repeat("x", 200) + `"}`

	done := make(chan error, 1)
	go func() {
		for range publications {
			if err := flooder.conn.WriteString(frame); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var heapPeak float64
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("flooder cut off: %v", err)
			}
			finished = true
		case <-time.After(50 * time.Millisecond):
		}
		heapPeak = max(heapPeak, srv.metric(t, "go_memstats_heap_inuse_bytes"))
	}
	// Every publication was taken: the next one gets the following offset.
	flooder.sendJSON(map[string]any{"type": "message", "channel": "flood:1", "data": "last", "id": 1})
	if ack := flooder.expect("published"); ack["offset"] != float64(publications+1) {
		t.Fatalf("last publication at offset %v, want %d", ack["offset"], publications+1)
	}
	// Queued in the broker, the flood would take well over 100 MB.
	if growth := (heapPeak - heapBefore) / (1 << 20); growth > 40 {
		t.Fatalf("broker heap grew by %.0f MiB during the flood", growth)
	}
	t.Logf("broker heap peak growth %.1f MiB", (heapPeak-heapBefore)/(1<<20))
}

// Connections of one user that open at the same moment, before anything
// has activated the user's session, still get exactly the user's limit.
func TestConnectionLimitHoldsForSimultaneousConnections(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--max-connections-per-user", "2")
	for round := range 5 {
		user := fmt.Sprintf("burst-%d", round)
		if welcomed := connectAtOnce(t, []*server{srv}, user, 8); welcomed != 2 {
			t.Fatalf("%s: %d of 8 simultaneous connections welcomed, limit 2", user, welcomed)
		}
	}
}

// connectAtOnce opens tries connections of user at the same moment, spread
// over nodes, and returns how many were welcomed; the others must be
// refused with 4029.
func connectAtOnce(t *testing.T, nodes []*server, user string, tries int) int {
	t.Helper()
	var wg sync.WaitGroup
	clients := make([]*client, tries)
	for i := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); clients[i] = nodes[i%len(nodes)].dial(t, "user="+user, nil, true) }()
	}
	wg.Wait()
	welcomed := 0
	for _, c := range clients {
		if decode(c.next())["type"] == "welcome" {
			welcomed++
		} else if code := c.expectClose(); code != 4029 {
			t.Fatalf("refused connection closed with %d, want 4029", code)
		}
	}
	return welcomed
}
