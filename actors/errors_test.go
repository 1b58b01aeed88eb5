package actors

import (
	"context"
	"errors"
	"testing"
	"time"

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
