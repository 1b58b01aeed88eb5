// Package tests drives the broker from outside: real server processes on
// loopback, real WebSocket clients, nothing mocked.
package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/switchboard/switchboard/cluster"
)

var brokerBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchboard-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	brokerBinary = filepath.Join(dir, "switchboard")
	args := []string{"build", "-o", brokerBinary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/switchboard")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the broker:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// runBroker runs the broker binary to completion and returns its output.
func runBroker(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(brokerBinary, args...).CombinedOutput()
	return string(out), err
}

// server is one broker process.
type server struct {
	t        testing.TB
	cmd      *exec.Cmd
	addr     string
	apiKey   string
	logMu    sync.Mutex
	log      bytes.Buffer
	exited   chan struct{}
	exitedAt time.Time // set before exited closes
	once     sync.Once
}

var listeningLine = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServer runs the broker with args on a free loopback port and waits
// until it accepts connections.
func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	s := runServer(t, exec.Command(brokerBinary, append([]string{"--addr", "127.0.0.1:0", "--grain-idle-timeout", "200ms"}, args...)...))
	for i, a := range args {
		if a == "--api-key" && i+1 < len(args) {
			s.apiKey = args[i+1]
		}
	}
	return s
}

// runServer starts cmd, a broker (possibly wrapped, as in a network
// namespace), and waits until it accepts connections.
func runServer(t testing.TB, cmd *exec.Cmd) *server {
	t.Helper()
	s := &server{t: t, cmd: cmd, exited: make(chan struct{})}
	// Races are judged from the log (ourRaces), not the exit code.
	s.cmd.Env = append(os.Environ(), "GORACE=exitcode=0")
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		defer close(s.exited)
		scanner := bufio.NewScanner(stderr)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			line := scanner.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			s.logMu.Unlock()
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		_ = s.cmd.Wait()
		s.exitedAt = time.Now()
	}()
	select {
	case s.addr = <-ready:
	case <-s.exited:
		t.Fatalf("broker exited before listening:\n%s", s.output())
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Fatalf("broker did not start listening within 30s:\n%s", s.output())
	}
	t.Cleanup(s.stop)
	return s
}

func (s *server) output() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// stop ends the broker with SIGTERM and fails the test on a data race or panic.
func (s *server) stop() { s.once.Do(s.terminate) }

func (s *server) terminate() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("broker did not exit within 20s of SIGTERM")
	}
	out := s.output()
	if races := ourRaces(out); races != "" {
		s.t.Errorf("the broker has a data race in Switchboard's code:\n%s", races)
	}
	if strings.Contains(out, "panic:") {
		s.t.Errorf("the broker panicked:\n%s", out)
	}
	if s.t.Failed() {
		s.t.Logf("broker %s log:\n%s", s.addr, lastLines(out, 60))
	}
}

// ourRaces returns the race reports whose racing accesses happen in this
// project's code. Reports wholly inside dependencies (protoactor-go has
// a few in gossip and remoting) are not ours to fix here.
func ourRaces(log string) string {
	var ours []string
	for _, report := range strings.Split(log, "WARNING: DATA RACE")[1:] {
		report, _, _ = strings.Cut(report, "==================")
		if accessesOurCode(report) {
			ours = append(ours, report)
		}
	}
	return strings.Join(ours, "\n----\n")
}

// accessesOurCode reports whether the top frame of either access is ours.
func accessesOurCode(report string) bool {
	lines := strings.Split(report, "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if (strings.Contains(trimmed, " at 0x") && (strings.HasPrefix(trimmed, "Read") || strings.HasPrefix(trimmed, "Write") ||
			strings.HasPrefix(trimmed, "Previous"))) && i+1 < len(lines) {
			if strings.Contains(lines[i+1], "switchboard/switchboard/") || strings.Contains(lines[i+1], "main.") {
				return true
			}
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kill ends the broker with SIGKILL, as a crash would.
func (s *server) kill() {
	s.once.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := cluster.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// startEtcd runs a real etcd server inside the test process.
func startEtcd(t testing.TB) *cluster.EmbeddedEtcd {
	t.Helper()
	etcd, err := cluster.StartEmbeddedEtcd(t.TempDir(), freeAddr(t), freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)
	return etcd
}

// startCluster starts n broker processes that find each other through etcd
// and waits until every one sees all n members.
func startCluster(t testing.TB, etcd *cluster.EmbeddedEtcd, n int, args ...string) []*server {
	t.Helper()
	nodes := make([]*server, n)
	for i := range nodes {
		nodes[i] = startNode(t, etcd, args...)
	}
	waitForMembers(t, nodes, n)
	return nodes
}

func startNode(t testing.TB, etcd *cluster.EmbeddedEtcd, args ...string) *server {
	t.Helper()
	return startServer(t, append([]string{"--cluster-etcd", etcd.Endpoint, "--cluster-lease-ttl", "2s",
		"--node-addr", "127.0.0.1:0", "--request-timeout", "2s", "--rate-limit", "0"}, args...)...)
}

// running are the servers whose process has not exited.
func running(servers []*server) []*server {
	var out []*server
	for _, s := range servers {
		select {
		case <-s.exited:
		default:
			out = append(out, s)
		}
	}
	return out
}

func waitForMembers(t testing.TB, nodes []*server, n int) {
	t.Helper()
	for _, node := range nodes {
		eventually(t, 20*time.Second, fmt.Sprintf("%s to see %d members", node.addr, n), func() bool {
			return node.metric(t, "switchboard_cluster_members") == float64(n)
		})
	}
}

func (s *server) wsURL(query string) string {
	u := "ws://" + s.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// metric reads one unlabelled (or label-filtered) series from /metrics.
func (s *server) metric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	return 0
}

// status GETs path and returns the HTTP status.
func (s *server) status(t testing.TB, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// api calls the HTTP API and returns the status and decoded body.
func (s *server) api(t testing.TB, method string, body any) (int, map[string]any) {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	default:
		raw, _ = json.Marshal(b)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/"+method, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// client is a real WebSocket client of the broker.
type client struct {
	t       testing.TB
	conn    *gws.Conn
	frames  chan []byte
	closed  chan struct{}
	closeMu sync.Mutex
	code    uint16
	welcome map[string]any
}

type clientEvents struct{ c *client }

func (e clientEvents) OnOpen(*gws.Conn)         {}
func (e clientEvents) OnPing(*gws.Conn, []byte) {}
func (e clientEvents) OnPong(*gws.Conn, []byte) {}
func (e clientEvents) OnClose(_ *gws.Conn, err error) {
	e.c.closeMu.Lock()
	if ce, ok := err.(*gws.CloseError); ok {
		e.c.code = ce.Code
	}
	e.c.closeMu.Unlock()
	close(e.c.closed)
}
func (e clientEvents) OnMessage(_ *gws.Conn, m *gws.Message) {
	e.c.frames <- bytes.Clone(m.Bytes())
	m.Close()
}

// connect opens a connection as user and waits for its welcome.
func (s *server) connect(t testing.TB, user string) *client {
	t.Helper()
	c := s.dial(t, "user="+user, nil, true)
	c.welcome = c.expect("welcome")
	return c
}

// dial opens a connection; read=false leaves the socket unread, like a
// stalled client.
func (s *server) dial(t testing.TB, query string, header http.Header, read bool) *client {
	t.Helper()
	c := &client{t: t, frames: make(chan []byte, 20000), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(clientEvents{c}, &gws.ClientOption{
		Addr:                s.wsURL(query),
		RequestHeader:       header,
		ReadMaxPayloadSize:  16 << 20,
		WriteMaxPayloadSize: 16 << 20,
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", query, err, status)
	}
	c.conn = conn
	if read {
		go conn.ReadLoop()
	}
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c
}

// send writes a raw text frame.
func (c *client) send(frame string) {
	c.t.Helper()
	if err := c.conn.WriteString(frame); err != nil {
		c.t.Fatalf("send %s: %v", frame, err)
	}
}

// sendJSON writes v as a JSON text frame.
func (c *client) sendJSON(v any) {
	c.t.Helper()
	raw, _ := json.Marshal(v)
	c.send(string(raw))
}

const waitTimeout = 10 * time.Second

// next returns the next frame, raw.
func (c *client) next() []byte {
	c.t.Helper()
	select {
	case f := <-c.frames:
		// Client libraries use these names for their own lifecycle events.
		if bytes.Contains(f, []byte(`"type":"connected"`)) || bytes.Contains(f, []byte(`"type":"disconnected"`)) {
			c.t.Fatalf("the server sent a reserved frame type: %s", f)
		}
		return f
	case <-c.closed:
		select {
		case f := <-c.frames: // frames that arrived before the close
			return f
		default:
		}
		c.closeMu.Lock()
		defer c.closeMu.Unlock()
		c.t.Fatalf("connection closed (code %d) before the next frame", c.code)
		return nil
	case <-time.After(waitTimeout):
		c.t.Fatalf("no frame within %s", waitTimeout)
		return nil
	}
}

func decode(raw []byte) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return m
}

// expect returns the next frame, which must have the given type.
func (c *client) expect(typ string) map[string]any {
	c.t.Helper()
	raw := c.next()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		c.t.Fatalf("frame is not JSON: %s", raw)
	}
	if m["type"] != typ {
		c.t.Fatalf("expected a %q frame, got %s", typ, raw)
	}
	return m
}

// expectTold returns the next frame of type typ, accepting only gap
// frames (a channel's stream jumped, and the server said so) before it.
func (c *client) expectTold(typ string) map[string]any {
	c.t.Helper()
	for {
		m := c.expect2(typ, "gap")
		if m["type"] == typ {
			return m
		}
	}
}

// expect2 returns the next frame, which must have one of two types.
func (c *client) expect2(typ1, typ2 string) map[string]any {
	c.t.Helper()
	raw := c.next()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || (m["type"] != typ1 && m["type"] != typ2) {
		c.t.Fatalf("expected a %q or %q frame, got %s", typ1, typ2, raw)
	}
	return m
}

// expectNothing asserts no frame arrives for d.
func (c *client) expectNothing(d time.Duration) {
	c.t.Helper()
	select {
	case f := <-c.frames:
		c.t.Fatalf("expected no frame, got %s", f)
	case <-time.After(d):
	}
}

// expectClose waits for the server to close the connection and returns the code.
func (c *client) expectClose() uint16 {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(waitTimeout):
		c.t.Fatalf("connection not closed within %s", waitTimeout)
	}
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	return c.code
}

// subscribe joins channel and waits for the confirmation.
func (c *client) subscribe(channel string) map[string]any {
	c.t.Helper()
	c.sendJSON(map[string]any{"type": "subscribe", "channel": channel, "id": "sub-" + channel})
	return c.expect("subscribed")
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
