package client

import (
	"context"
	"encoding/json"
)

// Recovery: each channel's stream handed on in order and once, with what
// a gap, a skip or an unannounced offset jump leaves out fetched from
// history, or a recovery_failed event when history no longer has it.

// live takes a live (or recovered) message or skip. While a gap is being
// filled it waits its turn; an offset jump the server did not announce is
// filled like a gap, before it is handed on.
func (c *Client) live(m Message) {
	c.mu.Lock()
	s := c.channels[m.Channel]
	if s != nil && !s.filling && s.epoch == m.Epoch && m.Offset > s.offset+1 {
		s.filling = true
		go c.fill(s, m.Channel, m.Epoch, s.offset, m.Offset-1)
	}
	if s != nil && s.filling {
		s.waiting = append(s.waiting, m) // handed on once the missed ones are
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.deliver(m)
}

// deliver hands a live or recovered message on, in order, once. A skip (a
// publication that excluded this user) only moves the offset on.
func (c *Client) deliver(m Message) {
	c.mu.Lock()
	newEpoch := false
	if s := c.channels[m.Channel]; s != nil {
		if s.epoch == m.Epoch && m.Offset <= s.offset {
			c.mu.Unlock()
			return // already seen before a reconnect
		}
		// A new epoch with no word from the server: what came before is gone.
		newEpoch = s.epoch != "" && s.epoch != m.Epoch
		s.offset, s.epoch = m.Offset, m.Epoch
	}
	c.mu.Unlock()
	if newEpoch {
		c.recoveryFailed(m.Channel, m.Offset-1, m.Epoch)
	}
	if m.Type != "skip" && c.opts.OnMessage != nil {
		c.opts.OnMessage(m)
	}
}

func (c *Client) recoveryFailed(channel string, offset uint64, epoch string) {
	frame, _ := json.Marshal(map[string]any{"channel": channel, "offset": offset, "epoch": epoch})
	c.event(Event{Type: "recovery_failed", Frame: frame})
}

// gap handles the server's word that a channel's stream jumps: the next
// message follows the gap's offset in its epoch. In the same epoch the
// missed messages are fetched from history and handed on first, while
// live ones wait; otherwise, or if history no longer holds them, a
// recovery_failed event says the application must reload.
func (c *Client) gap(raw []byte) {
	var g struct {
		Channel string `json:"channel"`
		Epoch   string `json:"epoch"`
		Offset  uint64 `json:"offset"`
	}
	if json.Unmarshal(raw, &g) != nil {
		return
	}
	c.mu.Lock()
	s := c.channels[g.Channel]
	if s == nil || s.filling || (s.epoch == g.Epoch && g.Offset <= s.offset) {
		c.mu.Unlock()
		return
	}
	if s.epoch != g.Epoch {
		s.offset, s.epoch = g.Offset, g.Epoch
		c.mu.Unlock()
		c.recoveryFailed(g.Channel, g.Offset, g.Epoch)
		return
	}
	s.filling = true
	since := s.offset
	c.mu.Unlock()
	// Not on the reading goroutine: history's answer arrives through it.
	go c.fill(s, g.Channel, g.Epoch, since, g.Offset)
}

// fill fetches the messages after since up to upTo from history, then
// hands on the live ones that waited meanwhile, and fills again if one of
// those jumps.
func (c *Client) fill(s *subscription, channel, epoch string, since, upTo uint64) {
	for {
		c.fetchMissed(s, channel, epoch, since, upTo)
		// Hand on what arrived meanwhile, and what arrives while doing so.
		for jumped := false; !jumped; {
			c.mu.Lock()
			if len(s.waiting) == 0 {
				s.filling = false
				c.mu.Unlock()
				return
			}
			m := s.waiting[0]
			if jumped = c.channels[channel] == s && m.Epoch == s.epoch && m.Offset > s.offset+1; jumped {
				since, upTo, epoch = s.offset, m.Offset-1, m.Epoch
			} else {
				s.waiting = s.waiting[1:]
			}
			c.mu.Unlock()
			if !jumped {
				c.deliver(m)
			}
		}
	}
}

// fetchMissed hands on the messages after since up to upTo from history,
// or says with recovery_failed that history no longer holds them.
func (c *Client) fetchMissed(s *subscription, channel, epoch string, since, upTo uint64) {
	for since < upTo {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		h, err := c.History(ctx, channel, since, int(upTo-since))
		cancel()
		var missed []Message
		for _, m := range h.Publications {
			if m.Epoch == epoch && m.Offset > since && m.Offset <= upTo {
				missed = append(missed, m)
			}
		}
		if err != nil || h.Epoch != epoch || len(missed) == 0 || missed[0].Offset != since+1 {
			c.mu.Lock()
			s.offset, s.epoch = upTo, epoch
			c.mu.Unlock()
			c.recoveryFailed(channel, upTo, epoch)
			return
		}
		for _, m := range missed {
			c.deliver(m)
		}
		since = missed[len(missed)-1].Offset
	}
}
