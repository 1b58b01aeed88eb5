package client

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Subscriptions: the channels a client means to be in, kept joined
// across reconnects and refusals that retrying can fix.

type subscription struct {
	presence bool
	info     json.RawMessage
	offset   uint64
	epoch    string
	filling  bool      // a gap is being filled from history
	waiting  []Message // live messages that arrived meanwhile
}

// Subscribed is the broker's answer to a subscribe.
type Subscribed struct {
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
}

// SubscribeOptions ask for join/leave events and carry presence info.
type SubscribeOptions struct {
	Presence bool
	Info     any
}

// Subscribe joins channel; after a reconnect it is joined again, recovering
// what was missed (a "recovery_failed" event says when that was impossible).
func (c *Client) Subscribe(ctx context.Context, channel string, opts SubscribeOptions) (Subscribed, error) {
	s := &subscription{presence: opts.Presence}
	if opts.Info != nil {
		s.info, _ = json.Marshal(opts.Info)
	}
	c.mu.Lock()
	if existing := c.channels[channel]; existing != nil {
		s = existing
	}
	c.channels[channel] = s
	c.mu.Unlock()
	return c.keepSubscribed(ctx, channel)
}

// resubscribeAtOnce bounds the re-subscriptions in flight after a reconnect.
const resubscribeAtOnce = 32

// retryable are refusals that retrying can fix: the server was busy, or
// the channel was moving.
func retryable(err error) bool {
	var refusal *Error
	return errors.As(err, &refusal) && (refusal.Code == "rate_limited" || refusal.Code == "unavailable")
}

// keepSubscribed subscribes until the server accepts, with backoff while
// the refusal is one retrying can fix, emitting a subscription_failed
// event ({"channel","code","error","retrying"}) for each refusal. A channel
// refused for good is dropped, so the client never believes it is
// subscribed when the server refused; one that cannot be reached while
// disconnected stays, to be joined on reconnect.
func (c *Client) keepSubscribed(ctx context.Context, channel string) (Subscribed, error) {
	for attempt := 0; ; attempt++ {
		sub, err := c.resubscribe(ctx, channel)
		if err == nil || errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) || errors.Is(err, errUnsubscribed) {
			return sub, err
		}
		again := retryable(err) && ctx.Err() == nil
		var refusal *Error
		code := "failed"
		if errors.As(err, &refusal) {
			code = refusal.Code
		}
		frame, _ := json.Marshal(map[string]any{"channel": channel, "code": code, "error": err.Error(), "retrying": again})
		c.event(Event{Type: "subscription_failed", Frame: frame, Err: err})
		if !again {
			c.mu.Lock()
			delete(c.channels, channel)
			c.mu.Unlock()
			return sub, err
		}
		select {
		case <-time.After(Backoff(min(attempt, 5), c.opts.BackoffBase, c.opts.BackoffCap)):
		case <-ctx.Done():
		case <-c.stop:
			return sub, ErrClosed
		}
	}
}

// errUnsubscribed: the channel was left while it was being joined.
var errUnsubscribed = errors.New("switchboard: unsubscribed meanwhile")

func (c *Client) resubscribe(ctx context.Context, channel string) (Subscribed, error) {
	c.mu.Lock()
	s := c.channels[channel]
	if s == nil {
		c.mu.Unlock()
		return Subscribed{}, errUnsubscribed
	}
	frame := map[string]any{"type": "subscribe", "channel": channel}
	if s.presence {
		frame["presence"] = true
	}
	if s.info != nil {
		frame["info"] = s.info
	}
	recovering := s.epoch != ""
	if recovering {
		frame["recover"] = map[string]any{"offset": s.offset, "epoch": s.epoch}
	}
	c.mu.Unlock()
	raw, err := c.Request(ctx, frame)
	if err != nil {
		return Subscribed{}, err
	}
	var sub Subscribed
	if err := json.Unmarshal(raw, &sub); err != nil {
		return sub, err
	}
	if recovering && !sub.Recovered {
		c.event(Event{Type: "recovery_failed", Frame: raw})
	}
	return sub, nil
}

// subscribed takes a channel's place from a subscribe reply, on the
// reading goroutine, before any frame that follows it: unless the
// subscription recovered from where it stood, its stream starts there.
func (c *Client) subscribed(raw []byte) {
	var sub Subscribed
	if json.Unmarshal(raw, &sub) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.channels[sub.Channel]; s != nil && !sub.Recovered {
		s.offset, s.epoch = sub.Offset, sub.Epoch
	}
}

// Unsubscribe leaves channel.
func (c *Client) Unsubscribe(ctx context.Context, channel string) error {
	c.mu.Lock()
	delete(c.channels, channel)
	c.mu.Unlock()
	_, err := c.Request(ctx, map[string]any{"type": "unsubscribe", "channel": channel})
	return err
}
