package actors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// TestGoAPIErrorsAreTyped checks that callers of the Broker's Go API can
// tell their own mistakes from a broker that did not answer, with
// errors.Is. Neither needs a cluster: input is checked first, and a call
// whose deadline has passed gives up before asking a grain.
func TestGoAPIErrorsAreTyped(t *testing.T) {
	b := NewBroker(Options{RequestTimeout: time.Second}, transport.NewMetrics(), nil)
	ctx := context.Background()
	late, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	for _, c := range []struct {
		name string
		call func() error
		want error
	}{
		{"Publish, bad channel", func() error { _, err := b.Publish(ctx, "bad channel", []byte(`1`), ""); return err }, transport.ErrInvalidChannel},
		{"Publish, bad data", func() error { _, err := b.Publish(ctx, "ok", []byte(`{not json`), ""); return err }, transport.ErrInvalidData},
		{"Publish, no data", func() error { _, err := b.Publish(ctx, "ok", nil, ""); return err }, transport.ErrInvalidData},
		{"SendToUser, bad data", func() error { _, err := b.SendToUser(ctx, "bob", []byte(`nope`)); return err }, transport.ErrInvalidData},
		{"Broadcast, bad data", func() error { _, err := b.Broadcast(ctx, []byte(`nope`)); return err }, transport.ErrInvalidData},
		{"Subscribers, bad channel", func() error { _, err := b.Subscribers(ctx, ""); return err }, transport.ErrInvalidChannel},
		{"Presence, bad channel", func() error { _, err := b.Presence(ctx, "a b"); return err }, transport.ErrInvalidChannel},
		{"SetChannelCapacity, bad channel", func() error { return b.SetChannelCapacity(ctx, "a\x00", 3) }, transport.ErrInvalidChannel},
		{"Subscribers, too late", func() error { _, err := b.Subscribers(late, "room"); return err }, transport.ErrUnavailable},
		{"UserConnections, too late", func() error { _, err := b.UserConnections(late, "bob"); return err }, transport.ErrUnavailable},
	} {
		if err := c.call(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want an error that is %v", c.name, err, c.want)
		}
	}
}

// A node over its lookup budget refuses a new lookup at once, unavailable,
// for a request that was never answered before; a publication an earlier
// attempt may have sequenced is not given up on a busy moment: it keeps
// asking until its deadline, and is then of unknown outcome.
func TestARefusedLookupDoesNotGiveUpOnAPublicationThatMayBeSequenced(t *testing.T) {
	b := startBrokerWith(t, Options{RequestTimeout: 300 * time.Millisecond, GrainIdleTimeout: time.Minute,
		LookupRate: 1e-9, LookupBurst: 1})
	ctx := context.Background()
	if _, err := b.Publish(ctx, "first", []byte(`1`), ""); err != nil {
		t.Fatal(err) // the one lookup in the budget
	}
	refused := func() float64 { return testutil.ToFloat64(b.metrics.GrainLookups.WithLabelValues("refused")) }
	fresh := &pb.Publish{Channel: "second", Data: []byte(`2`), Publisher: "p", Sequence: 1}
	if _, err := request[*pb.Published](ctx, b, ChannelKind, "second", fresh); !errors.Is(err, transport.ErrUnavailable) || refused() != 1 {
		t.Fatalf("a new publication over the lookup budget: %v after %v refusals; want unavailable after one", err, refused())
	}
	retried := &pb.Publish{Channel: "second", Data: []byte(`2`), Publisher: "p", Sequence: 1, UnansweredBy: "an-activation-that-timed-out"}
	if _, err := request[*pb.Published](ctx, b, ChannelKind, "second", retried); !errors.Is(err, transport.ErrOutcomeUnknown) || refused() < 3 {
		t.Fatalf("a publication that may have been sequenced, over the lookup budget: %v after %v refusals in all; want outcome unknown after asking again", err, refused())
	}
}
