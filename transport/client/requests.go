package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lxzan/gws"
)

// Requests: frames correlated with their replies by id, and the
// operations built on them; publications wait in the offline queue while
// the client is disconnected.

// Request sends frame with a fresh id and returns the reply; an error
// reply becomes an *Error.
func (c *Client) Request(ctx context.Context, frame map[string]any) (json.RawMessage, error) {
	c.mu.Lock()
	if !c.connected {
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		return nil, ErrDisconnected
	}
	c.nextID++
	id := c.nextID
	done := make(chan reply, 1)
	c.pending[id] = done
	conn := c.conn
	c.mu.Unlock()
	withID := make(map[string]any, len(frame)+1)
	for k, v := range frame {
		withID[k] = v
	}
	withID["id"] = id
	raw, err := json.Marshal(withID)
	if err != nil {
		return nil, err
	}
	if err := conn.WriteMessage(gws.OpcodeText, raw); err != nil {
		return nil, ErrDisconnected
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		defer cancel()
	}
	select {
	case r := <-done:
		return r.raw, r.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("switchboard: %s: %w", frame["type"], ctx.Err())
	}
}

type queued struct {
	frame map[string]any
	done  chan reply
}

// Publish publishes data (any JSON-encodable value) and returns its offset.
// While disconnected it waits in the offline queue, if there is one.
func (c *Client) Publish(ctx context.Context, channel string, data any) (uint64, error) {
	return c.publish(ctx, map[string]any{"type": "message", "channel": channel, "data": data})
}

// PublishIfAt publishes only if the channel's last offset is expect; else
// the error is an *Error with Code "offset_mismatch" and the current Offset.
func (c *Client) PublishIfAt(ctx context.Context, channel string, data any, expect uint64) (uint64, error) {
	return c.publish(ctx, map[string]any{"type": "message", "channel": channel, "data": data, "expect_offset": expect})
}

func (c *Client) publish(ctx context.Context, frame map[string]any) (uint64, error) {
	raw, err := c.Request(ctx, frame)
	if errors.Is(err, ErrDisconnected) && c.opts.OfflineQueue > 0 {
		raw, err = c.enqueue(ctx, frame)
	}
	if err != nil {
		return 0, err
	}
	var res struct {
		Offset uint64 `json:"offset"`
	}
	err = json.Unmarshal(raw, &res)
	return res.Offset, err
}

func (c *Client) enqueue(ctx context.Context, frame map[string]any) (json.RawMessage, error) {
	done := make(chan reply, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if len(c.queue) >= c.opts.OfflineQueue {
		c.mu.Unlock()
		return nil, fmt.Errorf("switchboard: offline queue full: %w", ErrDisconnected)
	}
	c.queue = append(c.queue, queued{frame: frame, done: done})
	c.mu.Unlock()
	select {
	case r := <-done:
		return r.raw, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Send delivers data to every connection of user; it returns how many.
func (c *Client) Send(ctx context.Context, user string, data any) (int, error) {
	raw, err := c.Request(ctx, map[string]any{"type": "send", "user": user, "data": data})
	if err != nil {
		return 0, err
	}
	var res struct {
		Connections int `json:"connections"`
	}
	err = json.Unmarshal(raw, &res)
	return res.Connections, err
}

// PresenceUser is one user in a channel.
type PresenceUser struct {
	User        string          `json:"user"`
	Connections int             `json:"connections"`
	Info        json.RawMessage `json:"info"`
}

// Presence lists who is in channel (subscribers only).
func (c *Client) Presence(ctx context.Context, channel string) ([]PresenceUser, error) {
	raw, err := c.Request(ctx, map[string]any{"type": "presence", "channel": channel})
	if err != nil {
		return nil, err
	}
	var res struct {
		Users []PresenceUser `json:"users"`
	}
	err = json.Unmarshal(raw, &res)
	return res.Users, err
}

// History is a page of a channel's stored publications. More says that
// stored publications follow the last one: ask again with since set to
// its offset.
type History struct {
	Publications []Message `json:"publications"`
	Offset       uint64    `json:"offset"`
	Epoch        string    `json:"epoch"`
	More         bool      `json:"more"`
}

// History returns the stored publications after since, at most limit (0: all).
func (c *Client) History(ctx context.Context, channel string, since uint64, limit int) (History, error) {
	frame := map[string]any{"type": "history", "channel": channel, "since": since}
	if limit > 0 {
		frame["limit"] = limit
	}
	raw, err := c.Request(ctx, frame)
	if err != nil {
		return History{}, err
	}
	var h History
	err = json.Unmarshal(raw, &h)
	return h, err
}
