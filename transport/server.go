package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strings"
	"sync"
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
	// Command may wait while the connection's earlier commands are being
	// handled; its socket is not read meanwhile, so TCP slows the client.
	Command(*pb.ClientCommand)
	// Refreshed says a refreshed token replaced the connection's
	// permissions; it follows every command handed over before it.
	Refreshed(Refresh)
	Closed()
}

// Refresh is what a refreshed token changes on an open connection.
type Refresh struct {
	// Permissions replace the connection's: a subscription they no longer
	// allow ends, with an `unsubscribed` frame from RevokedFrame.
	Permissions Permissions
	// Info applies to subscriptions made from now on.
	Info TokenInfo
}

// TokenInfo is what a token says to show of its user in presence. A token
// with an info claim is authoritative: presence shows the claim, never the
// info a client puts in its subscribe frame, so nobody poses as another.
type TokenInfo struct {
	Claimed bool   // the token has an info claim
	Info    []byte // the claim, raw JSON; nil: nothing to show
}

// Server is the HTTP listener: WebSocket clients at /ws, the backend API
// under /api/, health and metrics.
type Server struct {
	opts      Options
	connector Connector
	metrics   *Metrics
	log       *slog.Logger
	upgrader  *gws.Upgrader
	v1        *gws.Upgrader
	http      *http.Server
	nodeTag   string
	nextConn  atomic.Uint64

	users   *userBuckets
	ips     ipCounter
	mu      sync.Mutex
	sockets map[*socketState]struct{}
	stop    chan struct{}
	flusher *Flusher
}

const readBufferBytes = 1024

// Subprotocol is the protocol name clients may offer; the browser client
// always does, so a token in Sec-WebSocket-Protocol has a name to answer with.
const Subprotocol = "switchboard.v1"

// NewServer serves connector's connections and backend's HTTP API with
// opts, whose zero values take DefaultOptions' values (see Options).
func NewServer(opts Options, connector Connector, backend Backend, metrics *Metrics, log *slog.Logger) *Server {
	opts = opts.withDefaults()
	s := &Server{opts: opts, connector: connector, metrics: metrics, log: log, nodeTag: randomHex(4),
		users: newUserBuckets(opts.UserRateLimit, opts.UserRateBurst), ips: ipCounter{limit: opts.MaxConnsPerIP, open: map[string]int{}},
		sockets: map[*socketState]struct{}{}, stop: make(chan struct{}), flusher: NewFlusher(runtime.GOMAXPROCS(0), FlushOptions{YieldEvery: DefaultYieldEvery})}
	s.upgrader = s.newUpgrader(nil)
	s.v1 = s.newUpgrader([]string{Subprotocol})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWebSocket)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Ready != nil && !opts.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: not a member of the cluster\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/api/", newAPI(opts.APIKey, opts.Limits, backend, log))
	serveWeb(mux)
	if opts.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: opts.ReadHeaderTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	return s
}

func (s *Server) newUpgrader(subprotocols []string) *gws.Upgrader {
	return gws.NewUpgrader(&socketEvents{s}, &gws.ServerOption{
		ReadMaxPayloadSize: s.opts.MaxFrameBytes,
		// Client frames are small; a 1 KiB read buffer instead of 4 saves
		// 3 KiB on every idle connection, and larger frames still arrive.
		ReadBufferSize:   readBufferBytes,
		CheckUtf8Enabled: true,
		HandshakeTimeout: 5 * time.Second,
		SubProtocols:     subprotocols,
		Logger:           gwsLogger{s.log},
	})
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.opts.PingInterval > 0 {
		go s.heartbeat()
	}
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting; hijacked WebSocket connections are the broker's to close.
func (s *Server) Shutdown(ctx context.Context) error {
	close(s.stop)
	defer s.flusher.Stop()
	return s.http.Shutdown(ctx)
}

const socketKey = "c"

// socketState is one client socket as the transport sees it.
type socketState struct {
	out           *Outbox
	ip            string
	lastActive    atomic.Int64 // unix nanoseconds of the last frame from the client
	bucket        *tokenBucket // publications; touched by the read loop only
	controlBucket *tokenBucket // every other frame; touched by the read loop only

	reading atomic.Bool // a frame read from the socket is being handled
	// The reader waits for the broker (Command): the socket is not read,
	// so silence from it says nothing about the client.
	waitingOnBroker atomic.Bool
	pastDue         atomic.Bool // set with due

	mu        sync.Mutex
	inbound   Inbound // nil until authenticated
	perms     Permissions
	timer     *time.Timer // the deadline: auth timeout, then token expiry
	deadline  time.Time   // zero: none
	deadlines uint64      // numbers the deadlines, so an outdated timer knows it
	due       string      // the refusal of a deadline that passed while a frame was handled
	ended     bool
}

func (st *socketState) authenticated() (Inbound, *Permissions) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.inbound, &st.perms
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint speaks WebSocket only: send an Upgrade: websocket request", http.StatusUpgradeRequired)
		return
	}
	if !s.originAllowed(r.Header.Get("Origin")) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	var user string
	if s.opts.Auth == nil {
		user = r.Header.Get("X-User-ID")
		if user == "" {
			user = r.URL.Query().Get("user")
		}
		if user == "" {
			user = "anon-" + randomHex(6)
		} else if !ValidUserID(user) {
			http.Error(w, "invalid user id: 1-255 bytes of UTF-8 without control characters", http.StatusBadRequest)
			return
		}
	}
	ip := s.clientIP(r)
	if !s.ips.acquire(ip) {
		http.Error(w, "too many connections from this address", http.StatusTooManyRequests)
		return
	}
	token, upgrader := s.handshakeToken(r)
	socket, err := upgrader.Upgrade(w, r)
	if err != nil {
		s.ips.release(ip)
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	id := s.nodeTag + "-" + uitoa36(s.nextConn.Add(1))
	st := &socketState{ip: ip, out: NewOutbox(socket.NetConn(), id, user, s.opts.Outbox, s.flusher, s.metrics, s.slowConsumer)}
	st.lastActive.Store(time.Now().UnixNano())
	if s.opts.RateLimit > 0 {
		st.bucket = newTokenBucket(s.opts.RateLimit, s.opts.RateBurst)
	}
	if s.opts.ControlRateLimit > 0 {
		st.controlBucket = newTokenBucket(s.opts.ControlRateLimit, s.opts.ControlRateBurst)
	}
	socket.Session().Store(socketKey, st)
	s.mu.Lock()
	s.sockets[st] = struct{}{}
	s.mu.Unlock()
	s.metrics.Connections.Inc()

	switch {
	case s.opts.Auth == nil:
		s.open(st, &Identity{User: user})
	case token != "":
		s.authenticate(st, token, time.Now())
	default:
		st.mu.Lock()
		s.armDeadline(st, time.Now().Add(s.opts.AuthTimeout), AuthTimeout)
		st.mu.Unlock()
	}
	go socket.ReadLoop()
}

// handshakeToken finds a token in ?token= or a Sec-WebSocket-Protocol
// entry auth.TOKEN, and picks the upgrader that answers the protocol a
// browser needs to hear back.
func (s *Server) handshakeToken(r *http.Request) (string, *gws.Upgrader) {
	var token string
	offersV1 := false
	var offered string
	for _, p := range strings.Split(r.Header.Get("Sec-WebSocket-Protocol"), ",") {
		p = strings.TrimSpace(p)
		switch {
		case p == Subprotocol:
			offersV1 = true
		case strings.HasPrefix(p, "auth."):
			offered = p
			token = strings.TrimPrefix(p, "auth.")
		}
	}
	upgrader := s.upgrader
	if offersV1 {
		upgrader = s.v1
	} else if offered != "" {
		upgrader = s.newUpgrader([]string{offered})
	}
	if q := r.URL.Query().Get("token"); q != "" {
		token = q
	}
	return token, upgrader
}

func (s *Server) originAllowed(origin string) bool {
	if origin == "" || len(s.opts.AllowedOrigins) == 0 {
		return true
	}
	for _, allowed := range s.opts.AllowedOrigins {
		if allowed == "*" || strings.EqualFold(allowed, origin) {
			return true
		}
		if scheme, host, ok := strings.Cut(allowed, "://*."); ok {
			if strings.HasPrefix(origin, scheme+"://") && strings.HasSuffix(strings.ToLower(origin), "."+strings.ToLower(host)) {
				return true
			}
		}
	}
	return false
}

// clientIP is the peer's address, or the client's as a trusted proxy
// reports it in X-Forwarded-For (its last entry, the one it added).
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer := net.ParseIP(host)
	forwarded := r.Header.Get("X-Forwarded-For")
	if peer == nil || forwarded == "" {
		return host
	}
	for _, trusted := range s.opts.TrustedProxies {
		if trusted.Contains(peer) {
			entries := strings.Split(forwarded, ",")
			if client := strings.TrimSpace(entries[len(entries)-1]); net.ParseIP(client) != nil {
				return client
			}
		}
	}
	return host
}

// heartbeat pings every connection and closes those silent for longer
// than the idle timeout; one goroutine for all connections. A connection
// whose reader waits for the broker is not silent, only unread.
func (s *Server) heartbeat() {
	ticker := time.NewTicker(s.opts.PingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-ticker.C:
			s.mu.Lock()
			for st := range s.sockets {
				if s.opts.IdleTimeout > 0 && !st.waitingOnBroker.Load() && now.Sub(time.Unix(0, st.lastActive.Load())) > s.opts.IdleTimeout {
					st.out.Close(CloseIdle, "idle timeout")
					continue
				}
				st.out.Push(PingControlFrame)
			}
			s.mu.Unlock()
		}
	}
}

func (s *Server) slowConsumer(out *Outbox) {
	s.metrics.SlowConsumerCloses.Inc()
	s.log.Warn("closing slow consumer", "connection", out.ID, "user", out.User)
}

func (s *Server) protocolError(out *Outbox, perr *ProtocolError) {
	s.metrics.ProtocolErrors.WithLabelValues(perr.Code).Inc()
	out.Push(ErrorFrame(perr.Code, perr.Text, perr.ID))
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
