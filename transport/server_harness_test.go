package transport

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// A real Server on loopback in front of a fake broker, and a real
// WebSocket client: the transport's behaviour without actors.

// fakeBroker opens connections that record what reaches them. While hold
// is open, Command waits, as a connection whose commands are stuck on an
// unavailable channel makes its socket's reader wait.
type fakeBroker struct {
	mu        sync.Mutex
	hold      chan struct{}
	commands  chan *pb.ClientCommand
	refreshes chan Refresh
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{commands: make(chan *pb.ClientCommand, 1000), refreshes: make(chan Refresh, 10)}
}

func (b *fakeBroker) Open(*Outbox) Inbound { return b }

func (b *fakeBroker) Command(cmd *pb.ClientCommand) {
	b.mu.Lock()
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		<-hold
	}
	b.commands <- cmd
}

func (b *fakeBroker) Refreshed(r Refresh) { b.refreshes <- r }
func (b *fakeBroker) Closed()             {}

// holdCommands makes commands wait until the returned function is called.
func (b *fakeBroker) holdCommands() (release func()) {
	hold := make(chan struct{})
	b.mu.Lock()
	b.hold = hold
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		b.hold = nil
		b.mu.Unlock()
		close(hold)
	}
}

const testSecret = "transport-test-secret"

func testToken(t *testing.T, user string, exp time.Time, extra jwt.MapClaims) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": user, "exp": exp.Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// withAuth turns authentication on with the test secret and no leeway.
func withAuth(t *testing.T, opts Options) Options {
	t.Helper()
	auth, err := NewAuthenticator(AuthConfig{HMACSecret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	opts.Auth = auth
	if opts.AuthTimeout == 0 {
		opts.AuthTimeout = 5 * time.Second
	}
	return opts
}

// startTestServer serves opts in front of broker on a free loopback port.
func startTestServer(t *testing.T, opts Options, broker Connector) (*Server, string) {
	t.Helper()
	if opts.MaxFrameBytes == 0 {
		opts.MaxFrameBytes = 64 << 10
	}
	if opts.Outbox.MaxFrames == 0 {
		opts.Outbox = roomy
	}
	s := NewServer(opts, broker, nil, NewMetrics(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	return s, ln.Addr().String()
}

// onlySocket returns the state of the server's one connection.
func (s *Server) onlySocket(t *testing.T) *socketState {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sockets) != 1 {
		t.Fatalf("%d connections, want 1", len(s.sockets))
	}
	for st := range s.sockets {
		return st
	}
	return nil
}

// testClient is a WebSocket client that never answers pings.
type testClient struct {
	t      *testing.T
	conn   *gws.Conn
	frames chan map[string]any
	pings  chan struct{}
	closed chan struct{}
	mu     sync.Mutex
	code   uint16
}

func (c *testClient) OnOpen(*gws.Conn)         {}
func (c *testClient) OnPong(*gws.Conn, []byte) {}
func (c *testClient) OnPing(*gws.Conn, []byte) {
	select {
	case c.pings <- struct{}{}:
	default:
	}
}
func (c *testClient) OnClose(_ *gws.Conn, err error) {
	c.mu.Lock()
	if ce, ok := err.(*gws.CloseError); ok {
		c.code = ce.Code
	}
	c.mu.Unlock()
	close(c.closed)
}
func (c *testClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	var frame map[string]any
	_ = json.Unmarshal(bytes.Clone(m.Bytes()), &frame)
	m.Close()
	c.frames <- frame
}

func dialTestServer(t *testing.T, addr, query string) *testClient {
	t.Helper()
	c := &testClient{t: t, frames: make(chan map[string]any, 1000), pings: make(chan struct{}, 1000), closed: make(chan struct{})}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + addr + "/ws?" + query})
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c
}

func (c *testClient) sendJSON(v any) {
	c.t.Helper()
	raw, _ := json.Marshal(v)
	if err := c.conn.WriteString(string(raw)); err != nil {
		c.t.Fatalf("send %s: %v", raw, err)
	}
}

const testWait = 10 * time.Second

// expect returns the next frame, which must be of type typ.
func (c *testClient) expect(typ string) map[string]any {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return c.check(f, typ)
	case <-c.closed:
		select {
		case f := <-c.frames: // arrived before the close
			return c.check(f, typ)
		default:
		}
		c.t.Fatalf("closed with %d before a %q frame", c.closeCode(), typ)
	case <-time.After(testWait):
		c.t.Fatalf("no %q frame within %s", typ, testWait)
	}
	return nil
}

func (c *testClient) check(f map[string]any, typ string) map[string]any {
	c.t.Helper()
	if f["type"] != typ {
		c.t.Fatalf("got %v, want a %q frame", f, typ)
	}
	return f
}

// expectClose waits for the server to close the connection and returns the code.
func (c *testClient) expectClose() uint16 {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(testWait):
		c.t.Fatalf("not closed within %s", testWait)
	}
	return c.closeCode()
}

func (c *testClient) closeCode() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

// isClosed reports, without waiting, whether the server closed the connection.
func (c *testClient) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isClosing reports whether the outbox takes no more frames: the server
// decided to close the connection.
func (o *Outbox) isClosing() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closing
}
