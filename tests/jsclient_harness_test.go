package tests

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// jsClient is the JavaScript client (transport/web/switchboard.js) run by
// Node.js against a real broker (testdata/js_client.mjs): what the client
// hands the application comes back as events, in order.
type jsClient struct {
	t      testing.TB
	stdin  io.WriteCloser
	mu     sync.Mutex
	events []jsEvent
	stderr strings.Builder
}

// jsEvent is one line the driver printed: an event name and its payload.
type jsEvent struct {
	Event   string         `json:"event"`
	Payload map[string]any `json:"payload"`
	Error   string         `json:"error"`
}

// startJSClient runs the JS client as user on url, subscribed to channels,
// and waits until it is.
func startJSClient(t testing.TB, url, user string, channels ...string) *jsClient {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node is not installed; ./tests/run installs it")
		}
		t.Skip("node is not installed (./tests/run installs Debian's nodejs)")
	}
	var args []string
	// Node 20 has WebSocket behind a flag; from Node 22 it is always there.
	if exec.Command(node, "-e", `process.exit(typeof WebSocket === "function" ? 0 : 1)`).Run() != nil {
		args = append(args, "--experimental-websocket")
	}
	args = append(args, "testdata/js_client.mjs", url, user)
	cmd := exec.Command(node, append(args, channels...)...)
	js := &jsClient{t: t}
	cmd.Stderr = &lockedWriter{mu: &js.mu, b: &js.stderr}
	stdin, _ := cmd.StdinPipe()
	js.stdin = stdin
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		scanner := bufio.NewScanner(stdout)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			var e jsEvent
			if json.Unmarshal(scanner.Bytes(), &e) == nil {
				js.mu.Lock()
				js.events = append(js.events, e)
				js.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close() // the driver closes its client and exits
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("js client %s: events %v\nstderr:\n%s", user, js.all(), js.stderr.String())
		}
	})
	if !within(waitTimeout, func() bool { return len(js.of("ready")) > 0 || len(js.of("fatal")) > 0 }) {
		t.Fatalf("the js client did not subscribe within %s: %v\n%s", waitTimeout, js.all(), js.stderrText())
	}
	if f := js.of("fatal"); len(f) > 0 {
		t.Fatalf("the js client: %s", f[0].Error)
	}
	return js
}

// of returns the events named name so far.
func (js *jsClient) of(name string) []jsEvent {
	js.mu.Lock()
	defer js.mu.Unlock()
	var out []jsEvent
	for _, e := range js.events {
		if e.Event == name {
			out = append(out, e)
		}
	}
	return out
}

func (js *jsClient) all() []jsEvent {
	js.mu.Lock()
	defer js.mu.Unlock()
	return append([]jsEvent(nil), js.events...)
}

func (js *jsClient) stderrText() string {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.stderr.String()
}

// sequence lists channel's messages (by data) and recovery_failed events
// in the order the application got them.
func (js *jsClient) sequence(channel string) []string {
	var out []string
	for _, e := range js.all() {
		if e.Payload["channel"] != channel {
			continue
		}
		switch e.Event {
		case "message":
			out = append(out, strings.Trim(jsonString(e.Payload["data"]), `"`))
		case "recovery_failed":
			out = append(out, "recovery_failed")
		}
	}
	return out
}

func jsonString(v any) string {
	raw, _ := json.Marshal(v)
	return string(raw)
}

// lockedWriter appends to b under mu.
type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
