package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard/switchboard/cluster"
	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

func startBroker(t testing.TB) *Broker {
	t.Helper()
	return startBrokerWith(t, Options{RequestTimeout: 2 * time.Second, GrainIdleTimeout: 100 * time.Millisecond})
}

func startBrokerWith(t testing.TB, opts Options) *Broker {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := NewBroker(opts, transport.NewMetrics(), log)
	node, err := cluster.Start(cluster.Config{Name: "test", NodeAddr: "127.0.0.1:0", RequestTimeout: 2 * time.Second, Log: log, LogLevel: slog.LevelError}, b.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Stop)
	if err := b.Start(node.Cluster, node); err != nil {
		t.Fatal(err)
	}
	return b
}

// peer is the client end of a connection opened straight on the broker:
// what the broker sends it waits in an in-memory outbox.
type peer struct {
	t       *testing.T
	inbound transport.Inbound
	out     *memoryOutbox
}

func openPeer(t *testing.T, b *Broker, id, user string) *peer {
	t.Helper()
	out := newMemoryOutbox(1000)
	return &peer{t: t, inbound: b.open(&client{ID: id, User: user, Outbox: out}, transport.TokenInfo{}), out: out}
}

func (p *peer) expect(typ string) map[string]any {
	p.t.Helper()
	m, err := p.next(typ)
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

func (p *peer) next(typ string) (map[string]any, error) {
	select {
	case frame, open := <-p.out.frames:
		var m map[string]any
		if open {
			_ = json.Unmarshal(transport.FramePayload(frame), &m)
		}
		if m["type"] != typ {
			return m, fmt.Errorf("want %s, got %v", typ, m)
		}
		return m, nil
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("no %s frame", typ)
	}
}

func TestGoAPI(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	alice := openPeer(t, b, "c1", "alice")
	bob := openPeer(t, b, "c2", "bob")
	for _, p := range []*peer{alice, bob} {
		p.expect("welcome")
		p.inbound.Command(&pb.ClientCommand{Kind: pb.ClientCommand_KIND_SUBSCRIBE, Channel: "room:1"})
		p.expect("subscribed")
	}

	offset, err := b.Publish(ctx, "room:1", []byte(`{"hello":"world"}`), "bob")
	if err != nil || offset != 1 {
		t.Fatalf("Publish = %d, %v", offset, err)
	}
	if m := alice.expect("message"); m["offset"] != float64(1) {
		t.Fatalf("alice got %v", m)
	}
	users, err := b.Subscribers(ctx, "room:1")
	if err != nil || strings.Join(users, ",") != "alice,bob" {
		t.Fatalf("Subscribers = %v, %v", users, err)
	}
	if n, err := b.SendToUser(ctx, "bob", []byte(`"hi"`)); err != nil || n != 1 {
		t.Fatalf("SendToUser = %d, %v", n, err)
	}
	if s := bob.expect("skip"); s["offset"] != float64(1) {
		t.Fatalf("bob, excluded, got %v in the publication's place", s)
	}
	if d := bob.expect("direct"); d["data"] != "hi" {
		t.Fatalf("bob got %v", d)
	}
	if n, err := b.UserConnections(ctx, "alice"); err != nil || n != 1 {
		t.Fatalf("UserConnections = %d, %v", n, err)
	}
	if n, err := b.Broadcast(ctx, []byte(`1`)); err != nil || n != 2 {
		t.Fatalf("Broadcast = %d, %v", n, err)
	}

	for _, bad := range []struct {
		channel string
		data    string
	}{{"bad channel", `1`}, {"ok", `{not json`}, {"ok", ``}} {
		if _, err := b.Publish(ctx, bad.channel, []byte(bad.data), ""); err == nil {
			t.Errorf("Publish(%q, %q) accepted", bad.channel, bad.data)
		}
	}
	if _, err := b.SendToUser(ctx, "bob", []byte(`nope`)); err == nil {
		t.Error("SendToUser with invalid JSON accepted")
	}
}

func TestGrainsPassivateWhenUnused(t *testing.T) {
	b := startBroker(t)
	p := openPeer(t, b, "c1", "carol")
	p.expect("welcome")
	p.inbound.Command(&pb.ClientCommand{Kind: pb.ClientCommand_KIND_SUBSCRIBE, Channel: "tmp:1"})
	p.expect("subscribed")
	channels := b.metrics.Actors.WithLabelValues(ChannelKind)
	sessions := b.metrics.Actors.WithLabelValues(SessionKind)
	if testutil.ToFloat64(sessions) != 0 {
		t.Fatal("a connection activated its user's session; only a use of it should")
	}
	if n, err := b.UserConnections(context.Background(), "carol"); err != nil || n != 1 {
		t.Fatalf("UserConnections = %d, %v", n, err)
	}
	if testutil.ToFloat64(channels) != 1 || testutil.ToFloat64(sessions) != 1 {
		t.Fatalf("channels %v sessions %v", testutil.ToFloat64(channels), testutil.ToFloat64(sessions))
	}
	time.Sleep(300 * time.Millisecond) // past the idle timeout: still in use, so still active
	if testutil.ToFloat64(channels) != 1 {
		t.Fatal("a channel with a subscriber passivated")
	}
	p.inbound.Closed()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(channels)+testutil.ToFloat64(sessions) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("grains still active: channels %v sessions %v", testutil.ToFloat64(channels), testutil.ToFloat64(sessions))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A passivated channel comes back on the next use, with a new epoch.
	offset, err := b.Publish(context.Background(), "tmp:1", []byte(`1`), "")
	if err != nil || offset != 1 {
		t.Fatalf("Publish after passivation = %d, %v", offset, err)
	}
}

// Users reconnecting while their session grain passivates: every
// connection is still attached (protoactor drops mail that reaches a
// stopping actor; requests retry and grains recognise the retries).
func TestReconnectsRacingPassivation(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A connection limit makes every connection call its user's session.
	b := NewBroker(Options{RequestTimeout: 5 * time.Second, GrainIdleTimeout: 20 * time.Millisecond, MaxConnectionsPerUser: 100}, transport.NewMetrics(), log)
	node, err := cluster.Start(cluster.Config{Name: "test", NodeAddr: "127.0.0.1:0", RequestTimeout: 5 * time.Second, Log: log, LogLevel: slog.LevelError}, b.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Stop)
	if err := b.Start(node.Cluster, node); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			for i := w; i < 800; i += 4 {
				p := openPeer(t, b, fmt.Sprintf("c%d", i), fmt.Sprintf("u%d", i%13))
				if _, err := p.next("welcome"); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				p.inbound.Closed()
				time.Sleep(time.Duration(i%7) * time.Millisecond)
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestSessionFollowsConnectionsOnceActive(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	sessions := b.metrics.Actors.WithLabelValues(SessionKind)
	first := openPeer(t, b, "c1", "dana")
	first.expect("welcome")
	if testutil.ToFloat64(sessions) != 0 {
		t.Fatal("connecting activated the session")
	}
	if n, err := b.SendToUser(ctx, "dana", []byte(`1`)); err != nil || n != 1 {
		t.Fatalf("SendToUser = %d, %v", n, err)
	}
	first.expect("direct")

	// The active session hears of a connection that opens later, and of
	// one that closes, without being activated again.
	second := openPeer(t, b, "c2", "dana")
	second.expect("welcome")
	waitUserConnections(t, b, "dana", 2)
	if n, err := b.SendToUser(ctx, "dana", []byte(`2`)); err != nil || n != 2 {
		t.Fatalf("SendToUser = %d, %v", n, err)
	}
	first.expect("direct")
	second.expect("direct")
	first.inbound.Closed()
	waitUserConnections(t, b, "dana", 1)
	second.inbound.Closed()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(sessions) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session of a user with no connections stayed active")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, err := b.UserConnections(ctx, "dana"); err != nil || n != 0 {
		t.Fatalf("UserConnections after all closed = %d, %v", n, err)
	}
}

func waitUserConnections(t *testing.T, b *Broker, user string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := b.UserConnections(context.Background(), user)
		if err == nil && n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("UserConnections(%s) = %d, %v; want %d", user, n, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
