package client

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Reconnecting: backoff with jitter, then the subscriptions and the
// publications queued meanwhile are restored.

// Backoff is the delay before reconnect attempt n (0-based): doubling
// from base up to limit, with jitter over its upper half.
func Backoff(n int, base, limit time.Duration) time.Duration {
	ceiling := limit
	if n < 30 && base<<n < limit {
		ceiling = base << n
	}
	return ceiling/2 + time.Duration(rand.Int64N(int64(ceiling/2)+1))
}

func (c *Client) reconnect() {
	for attempt := 0; c.opts.MaxAttempts == 0 || attempt < c.opts.MaxAttempts; attempt++ {
		delay := Backoff(attempt, c.opts.BackoffBase, c.opts.BackoffCap)
		c.event(Event{Type: "reconnecting", Frame: json.RawMessage(fmt.Sprintf(`{"attempt":%d,"delay_ms":%d}`, attempt+1, delay.Milliseconds()))})
		select {
		case <-c.stop:
			return
		case <-time.After(delay):
		}
		token := c.opts.Token
		if c.opts.GetToken != nil {
			if fresh, err := c.opts.GetToken(context.Background()); err == nil {
				token = fresh
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		err := c.open(ctx, token)
		cancel()
		if err == nil {
			c.event(Event{Type: "connected", Frame: json.RawMessage(`{"reconnected":true}`)})
			c.restore()
			return
		}
	}
	c.giveUp()
}

func (c *Client) giveUp() {
	c.shutdown()
	c.event(Event{Type: "reconnect_failed"})
}

// shutdown marks the client closed and fails what waits in the queue.
func (c *Client) shutdown() {
	c.mu.Lock()
	c.closed = true
	queue := c.queue
	c.queue = nil
	c.mu.Unlock()
	for _, q := range queue {
		q.done <- reply{err: ErrClosed}
	}
}

// restore re-subscribes every channel with recovery, then sends what was queued.
func (c *Client) restore() {
	c.mu.Lock()
	names := make([]string, 0, len(c.channels))
	for name := range c.channels {
		names = append(names, name)
	}
	queue := c.queue
	c.queue = nil
	c.mu.Unlock()
	// A few at a time: a client with hundreds of channels does not send
	// them all at once.
	slots := make(chan struct{}, resubscribeAtOnce)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			_, _ = c.keepSubscribed(context.Background(), name) // refusals are subscription_failed events
		}()
	}
	wg.Wait()
	for _, q := range queue {
		raw, err := c.Request(context.Background(), q.frame)
		q.done <- reply{raw: raw, err: err}
	}
}

func (c *Client) keepAlive() {
	ticker := time.NewTicker(c.opts.PingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-ticker.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
			_, _ = c.Request(ctx, map[string]any{"type": "ping"})
			cancel()
		}
	}
}
