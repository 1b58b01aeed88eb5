package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// Connector opens the broker side of a new client connection.
type Connector interface {
	// Open starts serving a connection whose frames go out through out.
	Open(out *Outbox) Inbound
}

// Inbound receives what a client connection does.
type Inbound interface {
	Command(*pb.ClientCommand)
	Closed()
}

// Options configure the client-facing server.
type Options struct {
	MaxFrameBytes     int
	Limits            Limits
	Outbox            OutboxLimits
	APIKey            string
	ReadHeaderTimeout time.Duration
}

// Server is the HTTP listener: WebSocket clients at /ws, the backend API
// under /api/, health and metrics.
type Server struct {
	opts      Options
	connector Connector
	backend   Backend
	metrics   *Metrics
	log       *slog.Logger
	upgrader  *gws.Upgrader
	http      *http.Server
	nodeTag   string
	nextConn  atomic.Uint64
}

func NewServer(opts Options, connector Connector, backend Backend, metrics *Metrics, log *slog.Logger) *Server {
	s := &Server{opts: opts, connector: connector, backend: backend, metrics: metrics, log: log, nodeTag: randomHex(4)}
	s.upgrader = gws.NewUpgrader(&socketEvents{s}, &gws.ServerOption{
		ReadMaxPayloadSize: opts.MaxFrameBytes,
		CheckUtf8Enabled:   true,
		HandshakeTimeout:   5 * time.Second,
		Logger:             gwsLogger{log},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWebSocket)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/api/", newAPI(opts.APIKey, opts.Limits, backend, log))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: opts.ReadHeaderTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	return s
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting; hijacked WebSocket connections are the broker's to close.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

const socketKey = "c"

type socketState struct {
	out     *Outbox
	inbound Inbound
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint speaks WebSocket only: send an Upgrade: websocket request", http.StatusUpgradeRequired)
		return
	}
	user := r.Header.Get("X-User-ID")
	if user == "" {
		user = r.URL.Query().Get("user")
	}
	if user == "" {
		user = "anon-" + randomHex(6)
	} else if !ValidUserID(user) {
		http.Error(w, "invalid user id: 1-255 bytes of UTF-8 without control characters", http.StatusBadRequest)
		return
	}
	socket, err := s.upgrader.Upgrade(w, r)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	id := s.nodeTag + "-" + uitoa36(s.nextConn.Add(1))
	out := NewOutbox(socket.NetConn(), id, user, s.opts.Outbox, s.metrics, s.slowConsumer)
	state := &socketState{out: out}
	socket.Session().Store(socketKey, state)
	state.inbound = s.connector.Open(out)
	s.metrics.Connections.Inc()
	go socket.ReadLoop()
}

func (s *Server) slowConsumer(out *Outbox) {
	s.metrics.SlowConsumerCloses.Inc()
	s.log.Warn("closing slow consumer", "connection", out.ID, "user", out.User)
}

func (s *Server) protocolError(out *Outbox, perr *ProtocolError) {
	s.metrics.ProtocolErrors.WithLabelValues(perr.Code).Inc()
	out.Push(ErrorFrame(perr.Code, perr.Text, perr.ID))
}

// socketEvents adapts gws callbacks to the broker's Inbound.
type socketEvents struct{ s *Server }

func stateOf(socket *gws.Conn) *socketState {
	v, _ := socket.Session().Load(socketKey)
	return v.(*socketState)
}

func (e *socketEvents) OnOpen(*gws.Conn) {}

func (e *socketEvents) OnClose(socket *gws.Conn, _ error) {
	st := stateOf(socket)
	st.out.socketGone()
	st.inbound.Closed()
	e.s.metrics.Connections.Dec()
}

func (e *socketEvents) OnPing(socket *gws.Conn, payload []byte) {
	stateOf(socket).out.Push(PongControlFrame(payload))
}

func (e *socketEvents) OnPong(*gws.Conn, []byte) {}

func (e *socketEvents) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	st := stateOf(socket)
	e.s.metrics.MessagesIn.Inc()
	if message.Opcode != gws.OpcodeText {
		e.s.protocolError(st.out, &ProtocolError{Code: CodeBinaryFrame, Text: "Binary frames are not supported: send JSON text frames"})
		return
	}
	cmd, perr := DecodeCommand(message.Bytes(), e.s.opts.Limits)
	if perr != nil {
		e.s.protocolError(st.out, perr)
		return
	}
	st.inbound.Command(cmd)
}

type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", v) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func uitoa36(v uint64) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [13]byte
	i := len(b)
	for {
		i--
		b[i] = digits[v%36]
		v /= 36
		if v == 0 {
			return string(b[i:])
		}
	}
}
