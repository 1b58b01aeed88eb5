package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/lxzan/gws"
)

// The clients of the failover and rolling-restart scenarios: publishers
// that keep every acknowledgement and retry what the broker asks them to
// retry, subscribers that reconnect to another node and recover (in
// failover_subscriber.go), and the ledger both write into. Load is light
// (hundreds of frames a second), so frames are decoded with encoding/json
// and every client has one lock.

// wireFrame is the part of a server frame the scenarios read.
type wireFrame struct {
	Type      string `json:"type"`
	Channel   string `json:"channel"`
	Data      string `json:"data"` // the scenarios publish strings only
	Offset    int64  `json:"offset"`
	Epoch     string `json:"epoch"`
	ID        int64  `json:"id"` // the scenarios number their frames from 1
	Code      string `json:"code"`
	Recovered *bool  `json:"recovered"`
}

// wsConn is one WebSocket connection that hands each decoded frame to
// onFrame on its read goroutine and closes closed when it ends.
type wsConn struct {
	conn     *gws.Conn
	onFrame  func(*wsConn, wireFrame)
	welcomed chan struct{}
	closed   chan struct{}
	once     sync.Once
	welcome  sync.Once
}

func (w *wsConn) OnOpen(*gws.Conn)             {}
func (w *wsConn) OnClose(*gws.Conn, error)     { w.once.Do(func() { close(w.closed) }) }
func (w *wsConn) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (w *wsConn) OnPong(*gws.Conn, []byte)     {}
func (w *wsConn) write(frame string) error     { return w.conn.WriteString(frame) }
func (w *wsConn) close()                       { _ = w.conn.NetConn().Close() }

func (w *wsConn) isClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}

func (w *wsConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	var f wireFrame
	if json.Unmarshal(m.Bytes(), &f) != nil {
		return
	}
	if f.Type == "welcome" {
		w.welcome.Do(func() { close(w.welcomed) })
		return
	}
	w.onFrame(w, f)
}

// dialFrames connects as user and waits for the welcome frame.
func dialFrames(url, user string, onFrame func(*wsConn, wireFrame)) (*wsConn, error) {
	w := &wsConn{onFrame: onFrame, welcomed: make(chan struct{}), closed: make(chan struct{})}
	conn, _, err := gws.NewClient(w, &gws.ClientOption{Addr: url + "?user=" + user, HandshakeTimeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	w.conn = conn
	go conn.ReadLoop()
	select {
	case <-w.welcomed:
		return w, nil
	case <-w.closed:
	case <-time.After(3 * time.Second):
	}
	w.close()
	return nil, fmt.Errorf("%s: no welcome", url)
}

// pubRecord is one publication: its first attempt, and how it ended.
type pubRecord struct {
	key, channel string
	firstSent    time.Time
	ackedAt      time.Time // zero unless answered published
	offset       int64
	outcome      string // "published", an error code, or "connection closed"; empty while unanswered
	attempts     int
}

// ledger holds every publication of a run and every epoch seen per channel.
type ledger struct {
	mu      sync.Mutex
	records []*pubRecord
	epochs  map[string]map[string]bool
}

func newLedger() *ledger { return &ledger{epochs: map[string]map[string]bool{}} }

func (l *ledger) add(r *pubRecord) {
	l.mu.Lock()
	l.records = append(l.records, r)
	l.mu.Unlock()
}

func (l *ledger) sawEpoch(channel, epoch string) {
	if epoch == "" {
		return
	}
	l.mu.Lock()
	if l.epochs[channel] == nil {
		l.epochs[channel] = map[string]bool{}
	}
	l.epochs[channel][epoch] = true
	l.mu.Unlock()
}

// snapshot copies the records, so analysis reads them without the lock.
func (l *ledger) snapshot() []pubRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]pubRecord, len(l.records))
	for i, r := range l.records {
		out[i] = *r
	}
	return out
}

// nextNode tries the nodes after from, in turn, until one accepts or
// ctx ends; at most ten rounds of all nodes.
func nextNode(ctx context.Context, urls []string, from int, user string, onFrame func(*wsConn, wireFrame)) (*wsConn, int, error) {
	for round := range 10 {
		for k := 1; k <= len(urls); k++ {
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
			i := (from + k) % len(urls)
			if c, err := dialFrames(urls[i], user, onFrame); err == nil {
				return c, i, nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(100*(round+1)) * time.Millisecond):
		}
	}
	return nil, 0, fmt.Errorf("%s: no node accepted a connection", user)
}

// ---- publishers ----

const (
	maxPendingPublications = 256
	retryDelay             = 150 * time.Millisecond
	maxAttempts            = 60
)

type pendingPublish struct {
	rec     *pubRecord
	frame   string
	conn    *wsConn
	retryAt time.Time // set when the broker asked for a retry
}

// failoverPublisher publishes at a steady rate, round robin over the
// channels, each publication with its own id. A publication refused with
// unavailable or rate_limited is sent again with the same id; one whose
// connection closes before its answer is given up (its outcome is unknown,
// and sending it again could publish it twice).
type failoverPublisher struct {
	name     string
	urls     []string
	channels []string
	ledger   *ledger
	mu       sync.Mutex
	conn     *wsConn
	node     int
	pending  map[int64]*pendingPublish
	nextID   int64
	// counts
	retries, reconnects, skipped int
}

func (p *failoverPublisher) connect(ctx context.Context, first bool) error {
	var c *wsConn
	var node int
	var err error
	if first {
		c, err = dialFrames(p.urls[p.node], p.name, p.onFrame)
		node = p.node
	} else {
		c, node, err = nextNode(ctx, p.urls, p.node, p.name, p.onFrame)
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.conn, p.node = c, node
	if !first {
		p.reconnects++
	}
	p.mu.Unlock()
	return nil
}

func (p *failoverPublisher) onFrame(c *wsConn, f wireFrame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.pending[f.ID]
	if pp == nil || f.ID == 0 {
		return
	}
	switch f.Type {
	case "published":
		pp.rec.outcome, pp.rec.ackedAt, pp.rec.offset = "published", time.Now(), f.Offset
		delete(p.pending, f.ID)
	case "error":
		if (f.Code == "unavailable" || f.Code == "rate_limited") && pp.rec.attempts < maxAttempts {
			pp.retryAt = time.Now().Add(retryDelay)
			return
		}
		pp.rec.outcome = f.Code
		delete(p.pending, f.ID)
	}
}

// abandonClosed gives up the publications waiting on a closed connection.
func (p *failoverPublisher) abandonClosed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, pp := range p.pending {
		if pp.conn.isClosed() {
			pp.rec.outcome = "connection closed"
			delete(p.pending, id)
		}
	}
	if p.conn != nil && p.conn.isClosed() {
		p.conn = nil
	}
}

// resendDue sends again the publications whose retry time has come.
func (p *failoverPublisher) resendDue() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, pp := range p.pending {
		if pp.retryAt.IsZero() || now.Before(pp.retryAt) || pp.conn != p.conn {
			continue
		}
		pp.retryAt = time.Time{}
		pp.rec.attempts++
		p.retries++
		_ = pp.conn.write(pp.frame)
	}
}

func (p *failoverPublisher) publish(k int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) >= maxPendingPublications {
		p.skipped++
		return
	}
	p.nextID++
	ch := p.channels[k%len(p.channels)]
	rec := &pubRecord{key: fmt.Sprintf("%s-%d", p.name, p.nextID), channel: ch, firstSent: time.Now(), attempts: 1}
	frame := fmt.Sprintf(`{"type":"message","channel":%q,"data":%q,"id":%d}`, ch, rec.key, p.nextID)
	p.pending[p.nextID] = &pendingPublish{rec: rec, frame: frame, conn: p.conn}
	p.ledger.add(rec)
	_ = p.conn.write(frame)
}

// run publishes every interval until publishing ends, then keeps retrying
// until nothing is pending or settle ends.
func (p *failoverPublisher) run(publishing, settle context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case <-settle.Done():
			return
		case <-tick.C:
		}
		p.abandonClosed()
		p.mu.Lock()
		connected, idle := p.conn != nil, len(p.pending) == 0
		p.mu.Unlock()
		if publishing.Err() != nil && (idle || !connected) {
			return
		}
		if !connected {
			if p.connect(settle, false) != nil {
				continue
			}
		}
		p.resendDue()
		if publishing.Err() == nil {
			p.publish(k)
		}
	}
}

func (p *failoverPublisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.close()
	}
}
