package transport

import (
	"testing"
	"time"
)

// A client whose commands wait on the broker (a channel that does not
// answer) keeps sending frames; its socket is not read meanwhile, so the
// server must not take its silence for idleness. A client that really
// sends nothing is still closed as idle.
func TestClientWaitingOnTheBrokerIsNotIdle(t *testing.T) {
	const idle = 300 * time.Millisecond
	broker := newFakeBroker()
	_, addr := startTestServer(t, Options{PingInterval: idle / 6, IdleTimeout: idle, DefaultSubscribe: Patterns{"*"}}, broker)
	c := dialTestServer(t, addr, "user=busy")
	release := broker.holdCommands()
	c.sendJSON(map[string]any{"type": "subscribe", "channel": "stuck:1", "id": 1})
	// The client stays active; the server, its reader held up, sees none
	// of it. Every ping is a heartbeat round that judged the connection.
	for pings := 0; pings < 30; pings++ { // 30 rounds: 5 idle timeouts
		c.sendJSON(map[string]any{"type": "ping", "id": pings})
		select {
		case <-c.pings:
		case <-c.closed:
			release()
			t.Fatalf("closed with %d after %d heartbeat rounds while its commands waited on the broker", c.closeCode(), pings)
		case <-time.After(testWait):
			t.Fatal("no heartbeat")
		}
	}
	release()
	if cmd := <-broker.commands; cmd.Channel != "stuck:1" {
		t.Fatalf("first command %v", cmd)
	}
	// Bad input: the same client now falls silent, and is closed as idle.
	start := time.Now()
	if code := c.expectClose(); code != CloseIdle {
		t.Fatalf("silent client closed with %d, want %d", code, CloseIdle)
	}
	if waited := time.Since(start); waited < idle/2 {
		t.Fatalf("closed %s after reading resumed: its idle time began before", waited)
	}
}
