package transport

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// outboxBroker is a fakeBroker that hands over each connection's outbox,
// so a test can answer the client.
type outboxBroker struct {
	*fakeBroker
	outboxes chan *Outbox
}

func (b *outboxBroker) Open(out *Outbox) Inbound {
	b.outboxes <- out
	return b.fakeBroker
}

// TestZeroOptionsServeClients checks that NewServer(Options{}) is a
// working server: a client may subscribe and publish, and frames reach it
// (a zero outbox limit once closed every connection with 4009 at its
// first frame).
func TestZeroOptionsServeClients(t *testing.T) {
	broker := &outboxBroker{fakeBroker: newFakeBroker(), outboxes: make(chan *Outbox, 1)}
	s := NewServer(Options{}, broker, nil, NewMetrics(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })

	c := dialTestServer(t, ln.Addr().String(), "user=alice")
	out := <-broker.outboxes
	c.sendJSON(map[string]any{"type": "subscribe", "channel": "room:1", "id": 1})
	c.sendJSON(map[string]any{"type": "message", "channel": "room:1", "data": map[string]any{"hi": 1}, "id": 2})
	for _, want := range []pb.ClientCommand_Kind{pb.ClientCommand_KIND_SUBSCRIBE, pb.ClientCommand_KIND_PUBLISH} {
		select {
		case cmd := <-broker.commands:
			if cmd.Kind != want || cmd.Channel != "room:1" {
				t.Fatalf("the broker got %v, want %v of room:1", cmd, want)
			}
		case f := <-c.frames:
			t.Fatalf("got %v, want the broker to get %v", f, want)
		case <-time.After(testWait):
			t.Fatalf("the broker got no %v within %s", want, testWait)
		}
	}
	out.Reply(SubscribedFrame("room:1", 0, "e1", nil, []byte("1")))
	out.Push(MessageFrame("room:1", "alice", []byte(`{"hi":1}`), 1, "e1", 0))
	c.expect("subscribed")
	if m := c.expect("message"); m["offset"] != float64(1) {
		t.Fatalf("got %v", m)
	}
	if c.isClosed() {
		t.Fatalf("closed with %d", c.closeCode())
	}
}

// TestDefaultsKeepWhatIsSet checks that NewServer fills only zero fields,
// and leaves those whose zero means "off", and explicitly empty
// permissions, as they are.
func TestDefaultsKeepWhatIsSet(t *testing.T) {
	o := Options{MaxFrameBytes: 2048, DefaultSend: ParsePatterns("")}.withDefaults()
	d := DefaultOptions()
	if o.MaxFrameBytes != 2048 || o.Outbox != d.Outbox || o.Limits.MaxDataBytes != d.Limits.MaxDataBytes {
		t.Errorf("filled: frame %d, outbox %+v, data %d", o.MaxFrameBytes, o.Outbox, o.Limits.MaxDataBytes)
	}
	if o.RateLimit != 0 || o.ControlRateLimit != 0 || o.PingInterval != 0 || o.IdleTimeout != 0 {
		t.Errorf("a zero that means off was filled: %+v", o)
	}
	if !o.DefaultSubscribe.Allows("any") || o.DefaultSend.Allows("anyone") {
		t.Errorf("permissions: subscribe %v, send %v", o.DefaultSubscribe, o.DefaultSend)
	}
}
