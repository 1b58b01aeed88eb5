package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// scriptedBroker is a WebSocket server that answers the client's frames
// with a script, to bring about what a real broker does only rarely.
type scriptedBroker struct {
	gws.BuiltinEventHandler
	answer func(socket *gws.Conn, frame map[string]any)
}

func (b *scriptedBroker) OnMessage(socket *gws.Conn, m *gws.Message) {
	defer m.Close()
	var frame map[string]any
	if json.Unmarshal(m.Bytes(), &frame) == nil {
		b.answer(socket, frame)
	}
}

func send(socket *gws.Conn, frame map[string]any) {
	raw, _ := json.Marshal(frame)
	_ = socket.WriteMessage(gws.OpcodeText, raw)
}

func startScripted(t *testing.T, answer func(*gws.Conn, map[string]any)) string {
	t.Helper()
	upgrader := gws.NewUpgrader(&scriptedBroker{answer: answer}, &gws.ServerOption{SubProtocols: []string{Subprotocol}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		socket, err := upgrader.Upgrade(w, r)
		if err != nil {
			return
		}
		send(socket, map[string]any{"type": "welcome", "user": "u", "connection_id": "c1"})
		go socket.ReadLoop()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "ws://" + ln.Addr().String() + "/ws"
}

// A gap the server announces in the same epoch is filled from history:
// the missed messages come first, in order, then the live ones that
// arrived meanwhile; nothing is reported lost.
func TestGapIsFilledFromHistory(t *testing.T) {
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		message := func(offset int) map[string]any {
			return map[string]any{"type": "message", "channel": "doc:1", "data": offset, "offset": offset, "epoch": "e1"}
		}
		switch f["type"] {
		case "subscribe":
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 3, "epoch": "e1", "id": f["id"]})
			send(socket, map[string]any{"type": "gap", "channel": "doc:1", "epoch": "e1", "offset": 5})
			send(socket, message(6))
		case "history":
			if f["since"] != float64(3) || f["limit"] != float64(2) {
				send(socket, map[string]any{"type": "error", "code": "unexpected", "error": "unexpected history request", "id": f["id"]})
				return
			}
			send(socket, map[string]any{"type": "history", "channel": "doc:1", "offset": 6, "epoch": "e1", "id": f["id"],
				"publications": []any{message(4), message(5)}})
		}
	})
	var mu sync.Mutex
	var offsets []uint64
	var events []string
	c, err := Dial(context.Background(), Options{URL: url, User: "u", NoReconnect: true,
		OnMessage: func(m Message) { mu.Lock(); offsets = append(offsets, m.Offset); mu.Unlock() },
		OnEvent:   func(e Event) { mu.Lock(); events = append(events, e.Type); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Subscribe(context.Background(), "doc:1", SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got, seen := append([]uint64(nil), offsets...), append([]string(nil), events...)
		mu.Unlock()
		if len(got) == 3 {
			if got[0] != 4 || got[1] != 5 || got[2] != 6 {
				t.Fatalf("messages %v, want 4 5 6", got)
			}
			for _, e := range seen {
				if e == "recovery_failed" {
					t.Fatalf("events %v: a gap history could fill was reported lost", seen)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages %v, events %v: want 4 5 6", got, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A subscription refused for now (rate_limited) is retried until the
// server accepts it; one refused for good (forbidden) is dropped and
// Subscribe returns the refusal. Each refusal is a subscription_failed
// event.
func TestRefusedSubscriptions(t *testing.T) {
	var mu sync.Mutex
	busy := 2
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		if f["type"] != "subscribe" {
			return
		}
		mu.Lock()
		refuse := f["channel"] == "busy:1" && busy > 0
		if refuse {
			busy--
		}
		mu.Unlock()
		switch {
		case refuse:
			send(socket, map[string]any{"type": "error", "code": "rate_limited", "error": "Rate limit exceeded", "id": f["id"]})
		case f["channel"] == "vault:1":
			send(socket, map[string]any{"type": "error", "code": "forbidden", "error": "Not allowed", "id": f["id"]})
		default:
			send(socket, map[string]any{"type": "subscribed", "channel": f["channel"], "offset": 0, "epoch": "e", "id": f["id"]})
		}
	})
	var failures []string
	c, err := Dial(context.Background(), Options{URL: url, User: "u", NoReconnect: true, BackoffBase: time.Millisecond, BackoffCap: 4 * time.Millisecond,
		OnEvent: func(e Event) {
			if e.Type == "subscription_failed" {
				var f struct {
					Channel, Code string
					Retrying      bool
				}
				_ = json.Unmarshal(e.Frame, &f)
				mu.Lock()
				failures = append(failures, fmt.Sprint(f.Channel, " ", f.Code, " ", f.Retrying))
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Subscribe(context.Background(), "busy:1", SubscribeOptions{}); err != nil {
		t.Fatalf("a subscription refused twice with rate_limited: %v", err)
	}
	var refusal *Error
	if _, err := c.Subscribe(context.Background(), "vault:1", SubscribeOptions{}); !errors.As(err, &refusal) || refusal.Code != "forbidden" {
		t.Fatalf("a forbidden subscription: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(failures, "; "); got != "busy:1 rate_limited true; busy:1 rate_limited true; vault:1 forbidden false" {
		t.Fatalf("subscription_failed events: %s", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.channels["busy:1"] == nil || c.channels["vault:1"] != nil {
		t.Fatal("the client believes it is subscribed where the server refused, or forgot where it accepted")
	}
}

// A subscription the server ends (code set) is forgotten, so a reconnect
// does not ask for it again; an unsubscribed frame without a code is not
// the server's doing and changes nothing.
func TestSubscriptionEndedByTheServerIsForgotten(t *testing.T) {
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		if f["type"] != "subscribe" {
			return
		}
		send(socket, map[string]any{"type": "subscribed", "channel": f["channel"], "offset": 0, "epoch": "e", "id": f["id"]})
		if f["channel"] == "lobby:1" {
			send(socket, map[string]any{"type": "unsubscribed", "channel": "lobby:1", "code": "forbidden", "reason": "The refreshed token does not allow lobby:1"})
			send(socket, map[string]any{"type": "unsubscribed", "channel": "chat:a"})
		}
	})
	ended := make(chan string, 2)
	c, err := Dial(context.Background(), Options{URL: url, User: "u", NoReconnect: true,
		OnEvent: func(e Event) {
			if e.Type == "unsubscribed" {
				var f struct{ Channel string }
				_ = json.Unmarshal(e.Frame, &f)
				ended <- f.Channel
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, ch := range []string{"chat:a", "lobby:1"} {
		if _, err := c.Subscribe(context.Background(), ch, SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"lobby:1", "chat:a"} {
		select {
		case got := <-ended:
			if got != want {
				t.Fatalf("unsubscribed event for %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no unsubscribed event")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.channels["lobby:1"] != nil || c.channels["chat:a"] == nil {
		t.Fatal("the client would subscribe again to a channel the server ended, or forgot one it did not")
	}
}
