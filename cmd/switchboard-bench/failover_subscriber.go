package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// position is the last offset and epoch a subscriber knows of a channel.
type position struct {
	epoch  string
	offset int64
}

// failoverSubscriber subscribes to every channel and, when its connection
// closes, connects to the next node and subscribes again with recover
// from the last position it saw.
type failoverSubscriber struct {
	name     string
	urls     []string
	home     int
	channels []string
	ledger   *ledger
	mu       sync.Mutex
	conn     *wsConn
	node     int
	state    map[string]*position   // channels subscribed on the current connection
	last     map[string]position    // what recover asks from
	asked    map[int64]subscribeAsk // subscribes not yet answered
	nextID   int64
	seen     map[string]int         // publication key → times received
	gaps     map[string][]time.Time // gap frames per channel
	// told is when the subscriber learnt it had missed publications of a
	// channel: a gap frame, or a subscribe answered recovered:false.
	told    map[string][]time.Time
	closing bool
	// counts
	disconnects, recoveryAsks, recovered, notRecovered, outOfOrder, refused int
}

type subscribeAsk struct {
	channel string
	recover bool
	from    position
	conn    *wsConn
}

func newSubscriber(name string, urls []string, home int, channels []string, l *ledger) *failoverSubscriber {
	return &failoverSubscriber{name: name, urls: urls, home: home, node: home, channels: channels, ledger: l,
		state: map[string]*position{}, last: map[string]position{}, asked: map[int64]subscribeAsk{},
		seen: map[string]int{}, gaps: map[string][]time.Time{}, told: map[string][]time.Time{}}
}

// subscribeAll asks for every channel on c, with recover when the
// subscriber has seen the channel before. Called with s.mu held.
func (s *failoverSubscriber) subscribeAll(c *wsConn) {
	s.state = map[string]*position{}
	for _, ch := range s.channels {
		from, seen := s.last[ch]
		s.ask(subscribeAsk{channel: ch, recover: seen, from: from, conn: c})
	}
}

func (s *failoverSubscriber) ask(a subscribeAsk) {
	s.nextID++
	s.asked[s.nextID] = a
	frame := fmt.Sprintf(`{"type":"subscribe","channel":%q,"id":%d}`, a.channel, s.nextID)
	if a.recover {
		frame = fmt.Sprintf(`{"type":"subscribe","channel":%q,"id":%d,"recover":{"offset":%d,"epoch":%q}}`,
			a.channel, s.nextID, a.from.offset, a.from.epoch)
	}
	_ = a.conn.write(frame)
}

func (s *failoverSubscriber) onFrame(c *wsConn, f wireFrame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c != s.conn {
		return
	}
	s.ledger.sawEpoch(f.Channel, f.Epoch)
	switch f.Type {
	case "subscribed":
		a, ok := s.asked[f.ID]
		if !ok {
			return
		}
		delete(s.asked, f.ID)
		pos := &position{epoch: f.Epoch, offset: f.Offset}
		if a.recover {
			s.recoveryAsks++
			if f.Recovered != nil && *f.Recovered {
				s.recovered++
				pos = &position{epoch: a.from.epoch, offset: a.from.offset} // the missed ones follow
			} else {
				s.notRecovered++
				s.told[f.Channel] = append(s.told[f.Channel], time.Now())
			}
		}
		s.state[f.Channel] = pos
		s.last[f.Channel] = *pos
	case "error":
		a, ok := s.asked[f.ID]
		if !ok {
			return
		}
		delete(s.asked, f.ID)
		if f.Code != "unavailable" && f.Code != "rate_limited" {
			s.refused++
			return
		}
		time.AfterFunc(250*time.Millisecond, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.conn == a.conn && !s.closing {
				s.ask(a)
			}
		})
	case "message":
		s.seen[f.Data]++
		pos := s.state[f.Channel]
		if pos == nil {
			return // not subscribed on this connection: cannot happen
		}
		if f.Epoch == pos.epoch && f.Offset <= pos.offset {
			s.outOfOrder++
		}
		pos.epoch, pos.offset = f.Epoch, f.Offset
		s.last[f.Channel] = *pos
	case "gap":
		s.gaps[f.Channel] = append(s.gaps[f.Channel], time.Now())
		s.told[f.Channel] = append(s.told[f.Channel], time.Now())
		if pos := s.state[f.Channel]; pos != nil {
			pos.epoch, pos.offset = f.Epoch, f.Offset
			s.last[f.Channel] = *pos
		}
	}
}

// subscribed says whether every channel is subscribed on the current connection.
func (s *failoverSubscriber) subscribed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil && len(s.state) == len(s.channels)
}

// start connects to the home node and subscribes; run then keeps the
// subscriber connected until ctx ends.
func (s *failoverSubscriber) start() error {
	c, err := dialFrames(s.urls[s.home], s.name, s.onFrame)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.conn = c
	s.subscribeAll(c)
	s.mu.Unlock()
	return nil
}

func (s *failoverSubscriber) run(ctx context.Context) {
	for {
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-c.closed:
		}
		s.mu.Lock()
		s.disconnects++
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		next, node, err := nextNode(ctx, s.urls, s.node, s.name, s.onFrame)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conn, s.node = next, node
		s.subscribeAll(next)
		s.mu.Unlock()
	}
}

func (s *failoverSubscriber) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	if s.conn != nil {
		s.conn.close()
	}
}
