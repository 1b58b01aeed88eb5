package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// rawHub is the speed-of-light reference: the same protocol subset as the
// broker (subscribe, publish, ping) served by gws alone — a mutex-protected
// map from channel to subscribers, one encode per publication, the same
// coalescing outbox per connection — and no actors, cluster or auth.
type rawHub struct {
	mu       sync.RWMutex
	channels map[string]*hubChannel
	nextID   atomic.Uint64
	upgrader *gws.Upgrader
	metrics  *transport.Metrics
	// Writes sockets in rounds as the broker's transport does, in the way
	// fastest for this hub: replies on the reading goroutine, no yielding.
	flusher *transport.Flusher
	// One goroutine fans every publication out, as a node's relay does: it
	// queues a burst of frames on each socket before their writers run,
	// so they leave in one write.
	fanout chan publication
}

type publication struct {
	ch    *hubChannel
	frame []byte
}

// hubChannel: seq orders its publications, as the channel actor does,
// without holding up other channels; subsMu guards the subscribers.
type hubChannel struct {
	seq    sync.Mutex
	offset uint64
	subsMu sync.RWMutex
	subs   map[*transport.Outbox]struct{}
}

func (h *rawHub) channel(name string) *hubChannel {
	h.mu.RLock()
	ch := h.channels[name]
	h.mu.RUnlock()
	if ch != nil {
		return ch
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch = h.channels[name]; ch == nil {
		ch = &hubChannel{subs: map[*transport.Outbox]struct{}{}}
		h.channels[name] = ch
	}
	return ch
}

func newRawHub() *rawHub {
	h := &rawHub{channels: map[string]*hubChannel{}, fanout: make(chan publication, 4096), metrics: transport.NewMetrics(),
		flusher: transport.NewFlusher(runtime.GOMAXPROCS(0), transport.FlushOptions{RepliesInline: true})}
	go func() {
		for p := range h.fanout {
			p.ch.subsMu.RLock()
			for sub := range p.ch.subs {
				sub.Push(p.frame)
			}
			p.ch.subsMu.RUnlock()
		}
	}()
	h.upgrader = gws.NewUpgrader(h, &gws.ServerOption{ReadMaxPayloadSize: 64 << 10})
	return h
}

func (h *rawHub) serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	slog.Info("raw hub listening", "addr", ln.Addr().String())
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.Handle("/metrics", promhttp.HandlerFor(h.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		socket, err := h.upgrader.Upgrade(w, r)
		if err != nil {
			return
		}
		id := "raw-" + strconv.FormatUint(h.nextID.Add(1), 36)
		out := transport.NewOutbox(socket.NetConn(), id, r.URL.Query().Get("user"),
			transport.OutboxLimits{MaxFrames: 4096, MaxBytes: 4 << 20, WriteTimeout: 10 * time.Second}, h.flusher, h.metrics, nil)
		socket.Session().Store("out", out)
		out.Push(transport.WelcomeFrame(out.User, id))
		go socket.ReadLoop()
	})
	return http.Serve(ln, mux)
}

func outOf(socket *gws.Conn) *transport.Outbox {
	v, _ := socket.Session().Load("out")
	return v.(*transport.Outbox)
}

func (h *rawHub) OnOpen(*gws.Conn)         {}
func (h *rawHub) OnPing(*gws.Conn, []byte) {}
func (h *rawHub) OnPong(*gws.Conn, []byte) {}

func (h *rawHub) OnClose(socket *gws.Conn, _ error) {
	out := outOf(socket)
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, ch := range h.channels {
		ch.subsMu.Lock()
		delete(ch.subs, out)
		ch.subsMu.Unlock()
	}
}

func (h *rawHub) OnMessage(socket *gws.Conn, m *gws.Message) {
	defer m.Close()
	out := outOf(socket)
	cmd, perr := transport.DecodeCommand(m.Bytes(), transport.Limits{MaxDataBytes: 60 << 10})
	if perr != nil {
		out.Push(transport.ErrorFrame(perr.Code, perr.Text, perr.ID))
		return
	}
	switch cmd.Kind {
	case pb.ClientCommand_KIND_SUBSCRIBE:
		ch := h.channel(cmd.Channel)
		ch.seq.Lock()
		ch.subsMu.Lock()
		ch.subs[out] = struct{}{}
		ch.subsMu.Unlock()
		out.Push(transport.SubscribedFrame(cmd.Channel, ch.offset, "raw", nil, cmd.Id))
		ch.seq.Unlock()
	case pb.ClientCommand_KIND_PUBLISH:
		ch := h.channel(cmd.Channel)
		ch.seq.Lock()
		ch.offset++
		offset := ch.offset
		frame := transport.MessageFrame(cmd.Channel, out.User, cmd.Data, offset, "raw", time.Now().UnixMilli())
		h.fanout <- publication{ch: ch, frame: frame} // under seq: handed over in offset order
		ch.seq.Unlock()
		if len(cmd.Id) > 0 {
			out.Reply(transport.PublishedFrame(cmd.Channel, offset, cmd.Id))
		}
	case pb.ClientCommand_KIND_PING:
		out.Reply(transport.PongFrame(cmd.Id))
	}
}
