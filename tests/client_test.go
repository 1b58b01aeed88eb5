package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	goclient "github.com/switchboard/switchboard/transport/client"
)

// recorder collects what a Go client hands the application.
type recorder struct {
	mu       sync.Mutex
	messages []goclient.Message
	events   []goclient.Event
	changed  chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1000)} }

func (r *recorder) onMessage(m goclient.Message) {
	r.mu.Lock()
	r.messages = append(r.messages, m)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) onEvent(e goclient.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; events %v", what, r.eventTypes())
		}
	}
}

func (r *recorder) eventTypes() []string {
	var out []string
	for _, e := range r.events {
		out = append(out, e.Type)
	}
	return out
}

func (r *recorder) saw(typ string) bool {
	for _, e := range r.events {
		if e.Type == typ {
			return true
		}
	}
	return false
}

func TestGoClient(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--namespaces", "doc:history=100/5m")
	ctx := context.Background()
	rec := newRecorder()
	c, err := goclient.Dial(ctx, goclient.Options{URL: srv.wsURL(""), User: "gopher", OnMessage: rec.onMessage, OnEvent: rec.onEvent})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.User() != "gopher" {
		t.Fatalf("user %q", c.User())
	}
	if _, err := c.Subscribe(ctx, "doc:go", goclient.SubscribeOptions{Presence: true, Info: map[string]string{"lang": "go"}}); err != nil {
		t.Fatal(err)
	}
	offset, err := c.Publish(ctx, "doc:go", map[string]int{"n": 1})
	if err != nil || offset != 1 {
		t.Fatalf("Publish = %d, %v", offset, err)
	}
	rec.waitFor(t, "the message", func() bool { return len(rec.messages) == 1 })
	if m := rec.messages[0]; m.From != "gopher" || string(m.Data) != `{"n":1}` || m.Epoch == "" {
		t.Fatalf("message %+v", m)
	}
	_, err = c.PublishIfAt(ctx, "doc:go", "late", 0)
	var refused *goclient.Error
	if !errors.As(err, &refused) || refused.Code != "offset_mismatch" || refused.Offset != 1 {
		t.Fatalf("PublishIfAt = %v", err)
	}
	if _, err := c.Subscribe(ctx, "bad channel", goclient.SubscribeOptions{}); !errors.As(err, &refused) || refused.Code != "invalid_channel" {
		t.Fatalf("bad channel: %v", err)
	}
	users, err := c.Presence(ctx, "doc:go")
	if err != nil || len(users) != 1 || users[0].User != "gopher" || string(users[0].Info) != `{"lang":"go"}` {
		t.Fatalf("Presence = %+v, %v", users, err)
	}
	h, err := c.History(ctx, "doc:go", 0, 10)
	if err != nil || len(h.Publications) != 1 || h.Offset != 1 {
		t.Fatalf("History = %+v, %v", h, err)
	}
	if n, err := c.Send(ctx, "gopher", "self"); err != nil || n != 1 {
		t.Fatalf("Send = %d, %v", n, err)
	}
	rec.waitFor(t, "the direct message", func() bool { return rec.saw("direct") })
}

func TestGoClientReconnectsAndRecovers(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	srv := startServer(t, "--addr", addr, "--rate-limit", "0")
	ctx := context.Background()
	rec := newRecorder()
	c, err := goclient.Dial(ctx, goclient.Options{URL: "ws://" + addr + "/ws", User: "roamer",
		BackoffBase: 50 * time.Millisecond, BackoffCap: 400 * time.Millisecond, OfflineQueue: 10,
		OnMessage: rec.onMessage, OnEvent: rec.onEvent})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, "chat:1", goclient.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, "chat:1", "before"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the first message", func() bool { return len(rec.messages) == 1 })

	srv.stop()
	rec.waitFor(t, "reconnecting", func() bool { return rec.saw("disconnected") && rec.saw("reconnecting") })
	queued := make(chan error, 1)
	go func() {
		_, err := c.Publish(ctx, "chat:1", "while away")
		queued <- err
	}()
	time.Sleep(200 * time.Millisecond)
	startServer(t, "--addr", addr, "--rate-limit", "0")
	if err := <-queued; err != nil {
		t.Fatalf("queued publication: %v", err)
	}
	rec.waitFor(t, "reconnection, re-subscription and the queued message", func() bool {
		return rec.saw("connected") && len(rec.messages) == 2
	})
	if string(rec.messages[1].Data) != `"while away"` {
		t.Fatalf("after reconnecting: %+v", rec.messages[1])
	}
	// The restarted broker lost the channel's history: the client says so.
	if !rec.saw("recovery_failed") {
		t.Fatalf("events %v: a lost history must be reported", rec.eventTypes())
	}
	var raw map[string]any
	for _, e := range rec.events {
		if e.Type == "recovery_failed" {
			_ = json.Unmarshal(e.Frame, &raw)
		}
	}
	if raw["channel"] != "chat:1" {
		t.Fatalf("recovery_failed = %v", raw)
	}
}

func TestGoClientGivesUp(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	rec := newRecorder()
	c, err := goclient.Dial(context.Background(), goclient.Options{URL: srv.wsURL(""), User: "quitter",
		BackoffBase: 20 * time.Millisecond, BackoffCap: 40 * time.Millisecond, MaxAttempts: 3, OnEvent: rec.onEvent})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.kill()
	rec.waitFor(t, "reconnect_failed", func() bool { return rec.saw("reconnect_failed") })
	if _, err := c.Publish(context.Background(), "x:1", 1); !errors.Is(err, goclient.ErrClosed) {
		t.Fatalf("publish after giving up: %v", err)
	}
	if _, err := goclient.Dial(context.Background(), goclient.Options{URL: srv.wsURL("")}); err == nil {
		t.Fatal("dialing a dead broker succeeded")
	}
}

func TestGoClientRefreshesItsToken(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--jwt-secret", secret, "--jwt-leeway", "0s")
	short := token(t, "refresher", 3*time.Second, nil)
	refreshed := make(chan struct{}, 10)
	rec := newRecorder()
	c, err := goclient.Dial(context.Background(), goclient.Options{URL: srv.wsURL(""), Token: short,
		RefreshBeforeExpiry: 2 * time.Second, OnEvent: rec.onEvent,
		GetToken: func(context.Context) (string, error) {
			refreshed <- struct{}{}
			return token(t, "refresher", time.Hour, nil), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-refreshed:
	case <-time.After(10 * time.Second):
		t.Fatal("GetToken was not asked before expiry")
	}
	time.Sleep(3 * time.Second) // past the first token's expiry
	if _, err := c.Publish(context.Background(), "x:1", 1); err != nil {
		t.Fatalf("after the first token expired: %v (events %v)", err, rec.eventTypes())
	}
}

// A client that stays connected while its channel's node dies is told that
// the channel started a new epoch: it must not take the new epoch's first
// message for a continuation of what it had.
func TestGoClientToldOfANewEpoch(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	// No replicas: with one, the survivor would keep the channel's epoch.
	nodes := startCluster(t, etcd, 2, "--channel-replicas", "0")
	stays, dies := nodes[0], nodes[1]
	// A channel that lives on the node that will die.
	probe := stays.connect(t, "probe")
	channel := ""
	for i := 0; i < 40 && channel == ""; i++ {
		before := dies.metric(t, `switchboard_actors{kind="channel"}`)
		name := fmt.Sprintf("doomed:%d", i)
		probe.sendJSON(map[string]any{"type": "subscribe", "channel": name, "id": i})
		probe.expect("subscribed")
		if dies.metric(t, `switchboard_actors{kind="channel"}`) > before {
			channel = name
		}
	}
	if channel == "" {
		t.Fatal("no channel placed on the node that will die")
	}
	ctx := context.Background()
	rec := newRecorder()
	c, err := goclient.Dial(ctx, goclient.Options{URL: stays.wsURL(""), User: "stayer", OnMessage: rec.onMessage, OnEvent: rec.onEvent})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, channel, goclient.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, channel, "before"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the first message", func() bool { return len(rec.messages) == 1 })

	dies.kill()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := c.Publish(ctx, channel, "after"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("publications did not flow again after the node died: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rec.waitFor(t, "the message of the new epoch", func() bool { return len(rec.messages) == 2 })
	if !rec.saw("recovery_failed") {
		t.Fatalf("events %v: the client was not told the channel's history ended", rec.eventTypes())
	}
	if first, second := rec.messages[0], rec.messages[1]; first.Epoch == second.Epoch {
		t.Fatalf("the channel kept epoch %s after its node died; the test proves nothing", first.Epoch)
	}
}
