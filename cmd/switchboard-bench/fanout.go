package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// fanoutConfig is one fan-out run: Subscribers spread over Channels,
// Publishers publishing at Rate each (0: flat out, with Window in flight).
type fanoutConfig struct {
	URL string
	// URLs, when set, spread connections over several nodes: connection i
	// of each kind goes to URLs[i % len(URLs)].
	URLs        []string
	Subscribers int
	Channels    int
	Publishers  int
	Rate        float64
	Window      int
	Payload     int
	Duration    time.Duration
	// Stalled subscribers join channel 0 and never read a byte.
	Stalled int
	// ServerPID, when set, has the server's resident memory sampled.
	ServerPID int
	// Mark, when set, is called as publishing begins ("publishing") and
	// once the deliveries have drained ("drained").
	Mark func(phase string)
}

type fanoutResult struct {
	Setup                      time.Duration
	Published, Delivered       int64
	Lost, Duplicated, Reorders int64
	Elapsed                    time.Duration
	P50, P90, P99, Max         time.Duration
	// Server resident memory before publishing and at its peak after.
	RSSBefore, RSSPeak int64
	// Publications answered with an error (counted as acknowledged by the
	// loss count, which has no way to tell), its first such frame, and
	// connections the server closed before the end of the run.
	Refused     int64
	FirstError  string
	ClosedEarly int
}

func (cfg fanoutConfig) url(i int) string {
	if len(cfg.URLs) > 0 {
		return cfg.URLs[i%len(cfg.URLs)]
	}
	return cfg.URL
}

func (r fanoutResult) DeliveriesPerSecond() float64 {
	return float64(r.Delivered) / r.Elapsed.Seconds()
}

// subscriberConn counts what one subscriber receives; only its own read
// loop touches it, so it needs no lock.
type subscriberConn struct {
	conn       *gws.Conn
	ready      chan struct{}
	readyOnce  sync.Once
	publishers int
	last       []int64 // per publisher: last sequence seen on this channel
	latencies  []time.Duration
	delivered  int64
	lost, dups int64
	reorders   int64
	lastSeen   atomic.Int64
	closed     atomic.Bool
}

var dataPrefix = []byte(`"data":"`)

func (s *subscriberConn) OnOpen(*gws.Conn)         {}
func (s *subscriberConn) OnClose(*gws.Conn, error) { s.closed.Store(true) }
func (s *subscriberConn) OnPing(*gws.Conn, []byte) {}
func (s *subscriberConn) OnPong(*gws.Conn, []byte) {}

func (s *subscriberConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	if bytes.HasPrefix(b, []byte(`{"type":"subscribed"`)) {
		s.readyOnce.Do(func() { close(s.ready) })
		return
	}
	if !bytes.HasPrefix(b, []byte(`{"type":"message"`)) {
		return
	}
	now := time.Now().UnixNano()
	i := bytes.Index(b, dataPrefix)
	if i < 0 {
		return
	}
	fields := bytes.SplitN(b[i+len(dataPrefix):], []byte(" "), 4)
	if len(fields) < 4 {
		return
	}
	sent, _ := strconv.ParseInt(string(fields[0]), 10, 64)
	pub, _ := strconv.Atoi(string(fields[1]))
	seq, _ := strconv.ParseInt(string(fields[2]), 10, 64)
	if pub < 0 || pub >= s.publishers {
		return
	}
	s.delivered++
	s.latencies = append(s.latencies, time.Duration(now-sent))
	switch last := s.last[pub]; {
	case seq == last+1:
	case seq > last+1:
		s.lost += seq - last - 1
	case seq == last:
		s.dups++
	default:
		s.reorders++
	}
	if seq > s.last[pub] {
		s.last[pub] = seq
	}
	s.lastSeen.Store(now)
}

// publisherConn sends publications and counts their acknowledgements.
type publisherConn struct {
	conn     *gws.Conn
	inflight chan struct{}
	acked    atomic.Int64
	refused  atomic.Int64
	firstErr atomic.Pointer[string]
	closed   atomic.Bool
	ready    chan struct{}
	once     sync.Once
}

func (p *publisherConn) OnOpen(*gws.Conn)         {}
func (p *publisherConn) OnClose(*gws.Conn, error) { p.closed.Store(true) }
func (p *publisherConn) OnPing(*gws.Conn, []byte) {}
func (p *publisherConn) OnPong(*gws.Conn, []byte) {}
func (p *publisherConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	switch {
	case bytes.HasPrefix(b, []byte(`{"type":"welcome"`)):
		p.once.Do(func() { close(p.ready) })
	case bytes.HasPrefix(b, []byte(`{"type":"published"`)), bytes.HasPrefix(b, []byte(`{"type":"error"`)):
		if bytes.HasPrefix(b, []byte(`{"type":"error"`)) {
			p.refused.Add(1)
			frame := string(b)
			p.firstErr.CompareAndSwap(nil, &frame)
		}
		p.acked.Add(1)
		select {
		case <-p.inflight:
		default:
		}
	}
}

func dial(url, user string, handler gws.Event) (*gws.Conn, error) {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	conn, _, err := gws.NewClient(handler, &gws.ClientOption{Addr: url + sep + "user=" + user, ReadMaxPayloadSize: 1 << 20})
	if err != nil {
		return nil, err
	}
	go conn.ReadLoop()
	return conn, nil
}

func runFanout(ctx context.Context, cfg fanoutConfig) (fanoutResult, error) {
	var res fanoutResult
	start := time.Now()
	subs := make([]*subscriberConn, cfg.Subscribers)
	errs := make(chan error, cfg.Subscribers)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range subs {
		s := &subscriberConn{ready: make(chan struct{}), publishers: cfg.Publishers, last: make([]int64, cfg.Publishers)}
		subs[i] = s
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := dial(cfg.url(i), fmt.Sprintf("sub%d", i), s)
			if err != nil {
				errs <- err
				return
			}
			s.conn = conn
			_ = conn.WriteString(fmt.Sprintf(`{"type":"subscribe","channel":"bench:%d"}`, i%cfg.Channels))
			select {
			case <-s.ready:
			case <-time.After(30 * time.Second):
				errs <- fmt.Errorf("subscriber %d: no subscribed reply", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	res.Setup = time.Since(start)
	defer func() {
		for _, s := range subs {
			_ = s.conn.NetConn().Close()
		}
	}()
	for i := range cfg.Stalled {
		conn, _, err := gws.NewClient(&subscriberConn{}, &gws.ClientOption{Addr: fmt.Sprintf("%s?user=stalled%d", cfg.URL, i)})
		if err != nil {
			return res, err
		}
		defer conn.NetConn().Close()
		_ = conn.WriteString(`{"type":"subscribe","channel":"bench:0"}`) // and no read loop: it never reads
	}
	var rssPeak atomic.Int64
	if cfg.ServerPID != 0 {
		res.RSSBefore, _ = residentBytes(cfg.ServerPID)
		stopSampling := make(chan struct{})
		defer close(stopSampling)
		go func() {
			for {
				if rss, err := residentBytes(cfg.ServerPID); err == nil && rss > rssPeak.Load() {
					rssPeak.Store(rss)
				}
				select {
				case <-stopSampling:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}

	pubs := make([]*publisherConn, cfg.Publishers)
	for i := range pubs {
		window := max(cfg.Window, 1)
		p := &publisherConn{inflight: make(chan struct{}, window), ready: make(chan struct{})}
		conn, err := dial(cfg.url(i), fmt.Sprintf("pub%d", i), p)
		if err != nil {
			return res, err
		}
		p.conn = conn
		pubs[i] = p
		<-p.ready
		defer conn.NetConn().Close()
	}

	pad := strings.Repeat("x", max(cfg.Payload-32, 1))
	var published atomic.Int64
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	if cfg.Mark != nil {
		cfg.Mark("publishing")
	}
	began := time.Now()
	var pw sync.WaitGroup
	for p, pc := range pubs {
		pw.Add(1)
		go func() {
			defer pw.Done()
			seq := make([]int64, cfg.Channels)
			var tick *time.Ticker
			if cfg.Rate > 0 {
				tick = time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
				defer tick.Stop()
			}
			for k := 0; ; k++ {
				if tick != nil {
					select {
					case <-runCtx.Done():
						return
					case <-tick.C:
					}
				} else {
					select {
					case <-runCtx.Done():
						return
					case pc.inflight <- struct{}{}:
					}
				}
				ch := (p + k) % cfg.Channels
				seq[ch]++
				frame := fmt.Sprintf(`{"type":"message","channel":"bench:%d","data":"%d %d %d %s","id":%d}`,
					ch, time.Now().UnixNano(), p, seq[ch], pad, k)
				if pc.conn.WriteString(frame) != nil {
					return
				}
				published.Add(1)
			}
		}()
	}
	pw.Wait()
	// Drain: wait until deliveries stop arriving (or 15 s).
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		quiet := true
		for _, s := range subs {
			if time.Since(time.Unix(0, s.lastSeen.Load())) < 500*time.Millisecond {
				quiet = false
				break
			}
		}
		if quiet {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cfg.Mark != nil {
		cfg.Mark("drained")
	}
	res.Published = published.Load()
	res.RSSPeak = rssPeak.Load()
	var lastDelivery int64
	var all []time.Duration
	for _, s := range subs {
		res.Delivered += s.delivered
		res.Lost += s.lost
		res.Duplicated += s.dups
		res.Reorders += s.reorders
		all = append(all, s.latencies...)
		lastDelivery = max(lastDelivery, s.lastSeen.Load())
	}
	// Publications never seen at all by a subscriber count as lost too.
	res.Lost += missingTail(cfg, subs, pubs)
	for _, s := range subs {
		if s.closed.Load() {
			res.ClosedEarly++
		}
	}
	for _, p := range pubs {
		res.Refused += p.refused.Load()
		if f := p.firstErr.Load(); f != nil && res.FirstError == "" {
			res.FirstError = *f
		}
		if p.closed.Load() {
			res.ClosedEarly++
		}
	}
	res.Elapsed = time.Unix(0, lastDelivery).Sub(began)
	slices.Sort(all)
	if n := len(all); n > 0 {
		res.P50, res.P90, res.P99, res.Max = all[n*50/100], all[n*90/100], all[n*99/100], all[n-1]
	}
	return res, nil
}

// missingTail counts, per subscriber and publisher, acknowledged
// publications after the last one the subscriber saw. Publishers' final
// sequence numbers are recomputed from the acknowledgement counts.
func missingTail(cfg fanoutConfig, subs []*subscriberConn, pubs []*publisherConn) int64 {
	var missing int64
	for p, pc := range pubs {
		acked := pc.acked.Load()
		for i, s := range subs {
			ch := i % cfg.Channels
			// Publisher p's k-th publication (k from 0) went to (p+k) % Channels.
			sent := acked / int64(cfg.Channels)
			if rem := acked % int64(cfg.Channels); int64((ch-p%cfg.Channels+cfg.Channels)%cfg.Channels) < rem {
				sent++
			}
			if s.last[p] < sent {
				missing += sent - s.last[p]
			}
		}
	}
	return missing
}
