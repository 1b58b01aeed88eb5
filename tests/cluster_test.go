package tests

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestClusterFanoutAndUsers(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3, "--api-key", "k")

	t.Run("publications reach subscribers on every node, in one order", func(t *testing.T) {
		clients := make([]*client, len(nodes))
		for i, node := range nodes {
			clients[i] = node.connect(t, fmt.Sprintf("player%d", i))
			clients[i].subscribe("game:7")
		}
		for i, c := range clients {
			c.sendJSON(map[string]any{"type": "message", "channel": "game:7", "data": fmt.Sprintf("from node %d", i)})
		}
		var orders []string
		for _, c := range clients {
			var seen []string
			for range clients {
				m := c.expect("message")
				seen = append(seen, fmt.Sprintf("%v=%v", m["offset"], m["data"]))
			}
			orders = append(orders, strings.Join(seen, ","))
		}
		for i := range orders {
			if orders[i] != orders[0] {
				t.Fatalf("node %d saw %s, node 0 saw %s", i, orders[i], orders[0])
			}
		}
	})

	t.Run("send reaches a user connected to two nodes", func(t *testing.T) {
		bob1, bob3 := nodes[0].connect(t, "bob"), nodes[2].connect(t, "bob")
		alice := nodes[1].connect(t, "alice")
		alice.sendJSON(map[string]any{"type": "send", "user": "bob", "data": "hi", "id": 1})
		if s := alice.expect("sent"); s["connections"] != float64(2) {
			t.Fatalf("sent = %v", s)
		}
		for _, b := range []*client{bob1, bob3} {
			if d := b.expect("direct"); d["from"] != "alice" {
				t.Fatalf("direct = %v", d)
			}
		}

		for _, node := range nodes {
			status, body := node.api(t, "connected", map[string]any{"user": "bob"})
			if status != 200 || body["connections"] != float64(2) {
				t.Fatalf("connected via %s: %d %v", node.addr, status, body)
			}
		}
		for _, c := range []*client{bob1, bob3, alice} {
			c.subscribe("lobby:9")
		}
		status, body := nodes[1].api(t, "subscribers", map[string]any{"channel": "lobby:9"})
		if status != 200 || strings.Join(toStrings(body["users"]), ",") != "alice,bob" {
			t.Fatalf("subscribers: %d %v", status, body)
		}
		status, body = nodes[1].api(t, "disconnect", map[string]any{"user": "bob"})
		if status != 200 || body["connections"] != float64(2) {
			t.Fatalf("disconnect: %d %v", status, body)
		}
		for _, b := range []*client{bob1, bob3} {
			if code := b.expectClose(); code != 4010 {
				t.Fatalf("close code %d", code)
			}
		}
		status, body = nodes[0].api(t, "broadcast", map[string]any{"data": "all"})
		if status != 200 || body["connections"] != float64(1) {
			t.Fatalf("broadcast: %d %v", status, body)
		}
	})

	t.Run("a publication crosses to each other node once, not once per subscriber", func(t *testing.T) {
		var subs []*client
		for i := range 10 {
			c := nodes[1].connect(t, fmt.Sprintf("crowd%d", i))
			c.subscribe("crowd:1")
			subs = append(subs, c)
		}
		before := 0.0
		for _, n := range nodes {
			before += n.metric(t, "switchboard_remote_deliveries_total")
		}
		pub := nodes[2].connect(t, "crowd-pub")
		for i := range 5 {
			pub.sendJSON(map[string]any{"type": "message", "channel": "crowd:1", "data": i, "id": i})
			pub.expect("published")
		}
		for _, c := range subs {
			for range 5 {
				c.expect("message")
			}
		}
		after := 0.0
		for _, n := range nodes {
			after += n.metric(t, "switchboard_remote_deliveries_total")
		}
		// Subscribers live on one node; the channel lives on it or on another.
		if crossed := after - before; crossed > 5 {
			t.Fatalf("5 publications to 10 subscribers on one node crossed the network %v times", crossed)
		}
	})
}

func TestClusterSurvivesNodeLoss(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	const channels = 24
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprintf("room:%d", i)
	}
	// Subscribers on the two survivors, on every channel.
	var subs []*client
	for _, node := range nodes[:2] {
		c := node.connect(t, "watcher-"+node.addr)
		for _, ch := range names {
			c.subscribe(ch)
		}
		subs = append(subs, c)
	}
	// Publishers on the survivors keep publishing round the channels.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for p, node := range nodes[:2] {
		pub := node.connect(t, fmt.Sprintf("pub%d", p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				pub.sendJSON(map[string]any{"type": "message", "channel": names[i%channels], "data": time.Now().UnixMilli(), "id": i})
				pub.expect2("published", "error") // unavailable while a channel moves
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	// Every subscriber sees every channel flowing before the kill.
	awaitFlow := func(since time.Time) time.Duration {
		var mu sync.Mutex
		var last time.Time
		var readers sync.WaitGroup
		for _, c := range subs {
			readers.Add(1)
			go func() {
				defer readers.Done()
				pending := map[string]bool{}
				for _, ch := range names {
					pending[ch] = true
				}
				deadline := time.Now().Add(30 * time.Second)
				for len(pending) > 0 && time.Now().Before(deadline) {
					select {
					case raw := <-c.frames:
						m := decode(raw)
						if m["type"] == "message" && int64(m["data"].(float64)) >= since.UnixMilli() && pending[m["channel"].(string)] {
							delete(pending, m["channel"].(string))
						}
					case <-time.After(time.Second):
					}
				}
				if len(pending) > 0 {
					t.Errorf("a subscriber got nothing published after %s on %d channels", since.Format(time.StampMilli), len(pending))
				}
				mu.Lock()
				last = time.Now()
				mu.Unlock()
			}()
		}
		readers.Wait()
		return last.Sub(since)
	}
	awaitFlow(time.Now())
	killedAt := time.Now()
	nodes[2].kill()
	window := awaitFlow(killedAt)
	t.Logf("failover window (SIGKILL to publications flowing again on all %d channels, lease TTL 2s): %s", channels, window.Round(10*time.Millisecond))
	waitForMembers(t, nodes[:2], 2)
}

func TestClusterRollingRestart(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	// A client that reconnects to a live node and subscribes again, as
	// the client libraries do.
	type roamer struct {
		user string
		c    *client
	}
	live := func() []*server { return running(nodes) }
	connect := func(r *roamer, i int) {
		candidates := live()
		r.c = candidates[i%len(candidates)].connect(t, r.user)
		r.c.subscribe("rolling:1")
	}
	roamers := make([]*roamer, 6)
	for i := range roamers {
		roamers[i] = &roamer{user: fmt.Sprintf("roamer%d", i)}
		connect(roamers[i], i)
	}
	for i := range nodes {
		nodes[i].stop()
		for j, r := range roamers {
			select {
			case <-r.c.closed:
				if code := r.c.expectClose(); code != 1012 {
					t.Fatalf("close code %d on restart, want 1012", code)
				}
				connect(r, j)
			case <-time.After(100 * time.Millisecond):
			}
		}
		nodes[i] = startNode(t, etcd)
		waitForMembers(t, live(), 3)
	}
	pub := nodes[0].connect(t, "announcer")
	pub.sendJSON(map[string]any{"type": "message", "channel": "rolling:1", "data": "after the restart", "id": 1})
	pub.expect("published")
	for _, r := range roamers {
		// The channel moved with the restarts: subscribers that stayed
		// were told its epoch changed.
		if m := r.c.expectTold("message"); m["data"] != "after the restart" {
			t.Fatalf("%s got %v", r.user, m)
		}
	}
}

func TestClusterNodeWithoutEtcd(t *testing.T) {
	t.Parallel()
	out, err := runBroker(t, "--addr", "127.0.0.1:0", "--cluster-etcd", "http://"+freeAddr(t))
	if err == nil || !strings.Contains(out, "etcd") {
		t.Fatalf("a node that cannot reach etcd should exit with an error naming etcd; err=%v output:\n%s", err, out)
	}
}

func TestClusterMembershipFollowsEtcd(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)

	// A graceful stop leaves etcd at once, well before a lease could expire.
	stoppedAt := time.Now()
	nodes[2].stop()
	waitForMembers(t, nodes[:2], 2)
	if took := time.Since(stoppedAt); took > 10*time.Second {
		t.Fatalf("members noticed the departure only after %s", took)
	}
	if code := nodes[2].cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	// etcd lost while running: nodes report not ready and, once their
	// leases may have lapsed, acknowledge no more publications (a peer
	// could be sequencing the channel by then); connections stay open, or
	// are closed with 1012 if the node learns it has left.
	a, b := nodes[0].connect(t, "a"), nodes[1].connect(t, "b")
	a.subscribe("still:1")
	b.subscribe("still:1")
	etcd.Stop()
	for _, n := range nodes[:2] {
		eventually(t, 20*time.Second, n.addr+" to report not ready", func() bool {
			resp, err := http.Get("http://" + n.addr + "/readyz")
			if err != nil {
				return true // exited: it learned it had left
			}
			resp.Body.Close()
			return resp.StatusCode == 503
		})
	}
	refusedAt := time.Now()
	for i := 0; ; i++ {
		// The node may close the connection at any moment: a failed write
		// is answered by the close below.
		_ = b.conn.WriteString(fmt.Sprintf(`{"type":"message","channel":"still:1","data":"without etcd","id":%d}`, i))
		select {
		case <-b.closed:
			if code := b.expectClose(); code != 1012 {
				t.Fatalf("close code %d, want 1012", code)
			}
			return
		case raw := <-b.frames:
			if m := decode(raw); m["type"] == "error" {
				if m["code"] != "unavailable" {
					t.Fatalf("refused with %v, want unavailable", m)
				}
				t.Logf("publications refused %s after etcd was lost from this node's view", time.Since(refusedAt).Round(time.Millisecond))
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer to a publication while etcd is lost")
		}
		if time.Since(refusedAt) > 15*time.Second {
			t.Fatal("publications still acknowledged 15s after etcd was lost, with a 2s lease")
		}
	}
}

func TestClusterChurnLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	count := func(series string) float64 {
		total := 0.0
		for _, n := range nodes {
			total += n.metric(t, series)
		}
		return total
	}
	churn := func(round int) {
		node := nodes[round%3]
		c := node.connect(t, fmt.Sprintf("churn%d", round%7))
		c.subscribe(fmt.Sprintf("churn:%d", round%11))
		other := nodes[(round+1)%3].connect(t, "peer")
		other.subscribe(fmt.Sprintf("churn:%d", round%11))
		c.sendJSON(map[string]any{"type": "message", "channel": fmt.Sprintf("churn:%d", round%11), "data": round})
		other.expect("message")
		c.send(`{"type":"disconnect"}`)
		other.send(`{"type":"disconnect"}`)
		c.expectClose()
		other.expectClose()
	}
	churn(0) // warm up: remoting streams between all nodes exist from here on
	settled := func() {
		for _, series := range []string{"switchboard_connections", `switchboard_actors{kind="channel"}`, `switchboard_actors{kind="session"}`} {
			eventually(t, 15*time.Second, series+" back to zero", func() bool { return count(series) == 0 })
		}
	}
	settled()
	goroutines := count("go_goroutines")
	for round := 1; round < 100; round++ {
		churn(round)
	}
	eventually(t, 15*time.Second, "goroutines back to their baseline", func() bool {
		return count("go_goroutines") <= goroutines+6
	})
	for _, series := range []string{"switchboard_connections", "switchboard_subscriptions",
		`switchboard_actors{kind="connection"}`, `switchboard_actors{kind="channel"}`, `switchboard_actors{kind="session"}`} {
		eventually(t, 15*time.Second, series+" back to zero", func() bool { return count(series) == 0 })
	}
}

func TestClusterPresenceAndRecovery(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3, "--namespaces", "doc:history=1000/5m;room:presence")

	t.Run("presence spans nodes", func(t *testing.T) {
		alice, bob := nodes[0].connect(t, "alice"), nodes[2].connect(t, "bob")
		alice.subscribe("room:1")
		alice.expect("join")
		bob.subscribe("room:1")
		bob.expect("join")
		if j := alice.expect("join"); j["user"] != "bob" {
			t.Fatalf("join across nodes = %v", j)
		}
		carol := nodes[1].connect(t, "carol")
		carol.subscribe("room:1")
		carol.expect("join") // its own, as the namespace sends events to all
		carol.sendJSON(map[string]any{"type": "presence", "channel": "room:1", "id": 1})
		users := carol.expect("presence")["users"].([]any)
		if len(users) != 3 {
			t.Fatalf("presence from the third node: %v", users)
		}
	})

	t.Run("recovery after reconnecting to another node", func(t *testing.T) {
		editor := nodes[0].connect(t, "editor")
		sub := editor.subscribe("doc:shared")
		editor.send(`{"type":"disconnect"}`)
		editor.expectClose()
		writer := nodes[1].connect(t, "writer")
		for i := range 50 {
			writer.sendJSON(map[string]any{"type": "message", "channel": "doc:shared", "data": i, "id": i})
			writer.expect("published")
		}
		back := nodes[2].connect(t, "editor")
		back.sendJSON(map[string]any{"type": "subscribe", "channel": "doc:shared",
			"recover": map[string]any{"offset": sub["offset"], "epoch": sub["epoch"]}})
		if s := back.expect("subscribed"); s["recovered"] != true {
			t.Fatalf("subscribed = %v", s)
		}
		for i := range 50 {
			if m := back.expect("message"); m["data"] != float64(i) {
				t.Fatalf("recovered %d: %v", i, m)
			}
		}
	})

	t.Run("channels whose node died keep their epoch and recover from the replica", func(t *testing.T) {
		const channels = 24
		watcher := nodes[0].connect(t, "watcher")
		writer := nodes[1].connect(t, "writer2")
		epochs := map[string]any{}
		offsets := map[string]any{}
		for i := range channels {
			ch := fmt.Sprintf("doc:%d", i)
			epochs[ch] = watcher.subscribe(ch)["epoch"]
			writer.sendJSON(map[string]any{"type": "message", "channel": ch, "data": "before", "id": i})
			writer.expect("published")
			offsets[ch] = watcher.expect("message")["offset"]
		}
		nodes[2].kill()
		waitForMembers(t, nodes[:2], 2)
		for i := range channels {
			ch := fmt.Sprintf("doc:%d", i)
			probe := nodes[1].connect(t, fmt.Sprintf("probe%d", i))
			probe.sendJSON(map[string]any{"type": "subscribe", "channel": ch, "recover": map[string]any{"offset": offsets[ch], "epoch": epochs[ch]}})
			if s := probe.expect("subscribed"); s["epoch"] != epochs[ch] || s["recovered"] != true || s["offset"] != offsets[ch] {
				t.Fatalf("%s after its node died: %v (before: epoch %v, offset %v)", ch, s, epochs[ch], offsets[ch])
			}
		}
	})
}

// A user's session grain is activated by the first send to them and then
// follows their connections; a node that joins later must be followed too.
func TestClusterSessionFollowsUsersOntoNewNodes(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 2, "--api-key", "k")
	alice := nodes[1].connect(t, "alice")
	// Several users, so some sessions stay where they are when the third
	// node joins and some move to it; both must go on reaching everyone.
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6"}
	first := map[string]*client{}
	for i, user := range users {
		first[user] = nodes[0].connect(t, user)
		alice.sendJSON(map[string]any{"type": "send", "user": user, "data": "before", "id": i})
		if s := alice.expect("sent"); s["connections"] != float64(1) {
			t.Fatalf("sent to %s = %v", user, s)
		}
		first[user].expect("direct")
	}

	nodes = append(nodes, startNode(t, etcd, "--api-key", "k"))
	waitForMembers(t, nodes, 3)
	second := map[string]*client{}
	for _, user := range users {
		second[user] = nodes[2].connect(t, user)
	}
	for _, user := range users {
		eventually(t, 10*time.Second, user+" to have 2 connections", func() bool {
			status, body := nodes[1].api(t, "connected", map[string]any{"user": user})
			return status == 200 && body["connections"] == float64(2)
		})
		alice.sendJSON(map[string]any{"type": "send", "user": user, "data": "after", "id": 100})
		if s := alice.expect("sent"); s["connections"] != float64(2) {
			t.Fatalf("sent to %s = %v", user, s)
		}
		for _, c := range []*client{first[user], second[user]} {
			if d := c.expect("direct"); d["data"] != "after" {
				t.Fatalf("%s got %v", user, d)
			}
		}
	}
}

// Users' sessions live on nodes that restart one after another, each
// stopping gracefully: a message to a user still reaches each of their
// connections once, counted right, while the node is gone and after its
// successor joins.
func TestClusterSessionsOutliveRestartsOfTheirNodes(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	alice := nodes[0].connect(t, "alice")
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"}
	connected := map[string]*client{}
	for _, user := range users {
		connected[user] = nodes[0].connect(t, user)
	}
	id := 0
	sendToAll := func(data string) {
		t.Helper()
		for _, user := range users {
			id++
			alice.sendJSON(map[string]any{"type": "send", "user": user, "data": data, "id": id})
			if s := alice.expect("sent"); s["connections"] != float64(1) {
				t.Fatalf("%s: sent to %s = %v, want 1 connection", data, user, s)
			}
			if d := connected[user].expect("direct"); d["data"] != data {
				t.Fatalf("%s: %s got %v", data, user, d)
			}
		}
	}
	sendToAll("before")
	for i := 1; i < len(nodes); i++ {
		nodes[i].stop()
		waitForMembers(t, running(nodes), 2)
		sendToAll(fmt.Sprintf("node %d stopped", i))
		nodes[i] = startNode(t, etcd)
		waitForMembers(t, nodes, 3)
		sendToAll(fmt.Sprintf("node %d back", i))
	}
}

// The per-user connection limit holds cluster-wide for connections that
// open at the same moment on different nodes.
func TestClusterConnectionLimitForSimultaneousConnections(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 2, "--max-connections-per-user", "3")
	for round := range 4 {
		user := fmt.Sprintf("burst-%d", round)
		if welcomed := connectAtOnce(t, nodes, user, 10); welcomed != 3 {
			t.Fatalf("%s: %d of 10 simultaneous connections welcomed over 2 nodes, limit 3", user, welcomed)
		}
	}
}

// The README's production example advertises a host without a port.
func TestClusterNodeAdvertisingAHost(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	a := startNode(t, etcd)
	b := startNode(t, etcd, "--node-advertise", "127.0.0.1")
	waitForMembers(t, []*server{a, b}, 2)
	ca, cb := a.connect(t, "a"), b.connect(t, "b")
	for i := range 4 {
		channel := fmt.Sprintf("advertised:%d", i) // some owned by each node
		ca.subscribe(channel)
		cb.sendJSON(map[string]any{"type": "message", "channel": channel, "data": i, "id": i})
		cb.expect("published")
		if m := ca.expect("message"); m["data"] != float64(i) {
			t.Fatalf("got %v", m)
		}
	}
	out, err := runBroker(t, "--addr", "127.0.0.1:0", "--cluster-etcd", etcd.Endpoint, "--node-advertise", "bad host/x")
	if err == nil || !strings.Contains(out, "advertised address") {
		t.Fatalf("a malformed --node-advertise should be refused naming it; err=%v output:\n%s", err, out)
	}
}

// A rolling restart moves every channel with its state: a node that stops
// hands its channels over before it closes its clients with 1012, and a
// node that starts takes some over. Clients that reconnect and subscribe
// with recover get recovered:true and what they missed; clients that
// stayed see one gap-free stream; no channel's epoch changes.
func TestClusterRollingRestartKeepsHistory(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	args := []string{"--history-size", "1000", "--history-ttl", "5m"}
	nodes := startCluster(t, etcd, 3, args...)
	live := func() []*server { return running(nodes) }
	channels := make([]string, 8)
	for i := range channels {
		channels[i] = fmt.Sprintf("keep:%d", i)
	}
	type position struct {
		epoch  string
		offset float64
	}
	type reader struct {
		c    *client
		user string
		at   map[string]position
	}
	epochs := map[string]string{}
	// consume reads frames until n messages and replies more subscribed
	// replies arrived, checking that each channel's stream goes on where it
	// stood, in the epoch it began in.
	consume := func(r *reader, n, replies int) {
		t.Helper()
		for n > 0 || replies > 0 {
			m := r.c.expect2("message", "subscribed")
			ch := m["channel"].(string)
			epoch, _ := m["epoch"].(string)
			if epochs[ch] == "" {
				epochs[ch] = epoch
			}
			if epoch != epochs[ch] {
				t.Fatalf("%s: %s changed epoch %s -> %s during a rolling restart", r.user, ch, epochs[ch], epoch)
			}
			if m["type"] == "subscribed" {
				if recovered, asked := m["recovered"]; asked && recovered != true {
					t.Fatalf("%s: resubscribing to %s after a restart: %v", r.user, ch, m)
				}
				replies--
				continue
			}
			offset := m["offset"].(float64)
			if last, ok := r.at[ch]; ok && offset != last.offset+1 {
				t.Fatalf("%s: %s offset %v after %v", r.user, ch, offset, last.offset)
			}
			r.at[ch] = position{epoch, offset}
			n--
		}
	}
	// join connects to a live node and subscribes to every channel,
	// recovering from where the reader stood; missed is how many
	// publications it recovers.
	join := func(r *reader, i, missed int) {
		candidates := live()
		r.c = candidates[i%len(candidates)].connect(t, r.user)
		for _, ch := range channels {
			frame := map[string]any{"type": "subscribe", "channel": ch, "id": ch}
			if at, ok := r.at[ch]; ok {
				frame["recover"] = map[string]any{"offset": at.offset, "epoch": at.epoch}
			}
			r.c.sendJSON(frame)
		}
		consume(r, missed, len(channels))
	}
	readers := make([]*reader, 3)
	for i := range readers {
		readers[i] = &reader{user: fmt.Sprintf("reader%d", i), at: map[string]position{}}
		join(readers[i], i, 0)
	}
	var pub *client
	round := 0
	publishRound := func() {
		t.Helper()
		select {
		case <-pub.closed:
			pub = nil
		default:
		}
		if pub == nil {
			pub = live()[0].connect(t, "publisher")
		}
		round++
		for _, ch := range channels {
			pub.sendJSON(map[string]any{"type": "message", "channel": ch, "data": round, "id": ch})
			pub.expect("published")
		}
	}
	pub = nodes[0].connect(t, "publisher")
	publishRound()
	for _, r := range readers {
		consume(r, len(channels), 0)
	}
	for i := range nodes {
		nodes[i].stop()
		publishRound() // while the stopped node's readers are away
		for j, r := range readers {
			select {
			case <-r.c.closed:
				if code := r.c.expectClose(); code != 1012 {
					t.Fatalf("close code %d on restart, want 1012", code)
				}
				join(r, j, len(channels)) // recovers the round it missed
			default:
				consume(r, len(channels), 0)
			}
		}
		nodes[i] = startNode(t, etcd, args...)
		waitForMembers(t, live(), 3)
		publishRound()
		for _, r := range readers {
			consume(r, len(channels), 0)
		}
	}
	for _, r := range readers {
		for _, ch := range channels {
			if got := r.at[ch].offset; got != float64(round) {
				t.Fatalf("%s: %s ends at offset %v, want %d", r.user, ch, got, round)
			}
		}
	}
}
