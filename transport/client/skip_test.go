package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// recorder keeps what a client handed on: message offsets and events.
type recorder struct {
	mu       sync.Mutex
	offsets  []uint64
	events   []string
	failures []string // recovery_failed payloads
}

func (r *recorder) options(url string) Options {
	return Options{URL: url, User: "u", BackoffBase: time.Millisecond, BackoffCap: 4 * time.Millisecond,
		OnMessage: func(m Message) { r.mu.Lock(); r.offsets = append(r.offsets, m.Offset); r.mu.Unlock() },
		OnEvent: func(e Event) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, e.Type)
			if e.Type == "recovery_failed" {
				var f struct {
					Offset uint64
					Epoch  string
				}
				_ = json.Unmarshal(e.Frame, &f)
				r.failures = append(r.failures, fmt.Sprint(f.Offset, " ", f.Epoch))
			}
		}}
}

// waitFor waits until the client has handed on want (as "4 6 7"), then
// returns the events seen.
func (r *recorder) waitFor(t *testing.T, want string) (events, failures string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := strings.Trim(fmt.Sprint(r.offsets), "[]")
		events, failures = strings.Join(r.events, " "), strings.Join(r.failures, "; ")
		r.mu.Unlock()
		if got == want {
			return events, failures
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages %s, want %s (events: %s)", got, want, events)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// subscribeDoc dials the scripted broker at url, recording into r, and
// subscribes to doc:1; the client closes with the test.
func subscribeDoc(t *testing.T, url string, r *recorder) {
	t.Helper()
	c, err := Dial(context.Background(), r.options(url))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if _, err := c.Subscribe(context.Background(), "doc:1", SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
}

func message(offset int, epoch string) map[string]any {
	return map[string]any{"type": "message", "channel": "doc:1", "data": offset, "offset": offset, "epoch": epoch}
}

func skip(offset int) map[string]any {
	return map[string]any{"type": "skip", "channel": "doc:1", "offset": offset, "epoch": "e1"}
}

// A skip frame (a publication that excluded this user) moves the
// channel's offset on without a message: live, as an entry of a history
// page that fills a gap, and in a recovery backlog after a reconnect.
func TestSkipMovesTheOffsetOnSilently(t *testing.T) {
	var mu sync.Mutex
	var first *gws.Conn
	var asked []string // history requests and recoveries
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case f["type"] == "subscribe" && f["recover"] == nil:
			first = socket
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 3, "epoch": "e1", "id": f["id"]})
			for _, frame := range []map[string]any{message(4, "e1"), skip(5), message(6, "e1"),
				{"type": "gap", "channel": "doc:1", "epoch": "e1", "offset": 8}, message(9, "e1")} {
				send(socket, frame)
			}
		case f["type"] == "subscribe":
			asked = append(asked, fmt.Sprint("recover ", f["recover"]))
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 11, "epoch": "e1", "recovered": true, "id": f["id"]})
			send(socket, skip(10))
			send(socket, message(11, "e1"))
		case f["type"] == "history":
			asked = append(asked, fmt.Sprint("history ", f["since"], " ", f["limit"]))
			send(socket, map[string]any{"type": "history", "channel": "doc:1", "offset": 9, "epoch": "e1", "id": f["id"],
				"publications": []any{skip(7), message(8, "e1")}})
		}
	})
	var r recorder
	subscribeDoc(t, url, &r)
	r.waitFor(t, "4 6 8 9")
	mu.Lock()
	_ = first.WriteClose(1012, nil) // the broker restarts
	mu.Unlock()
	events, failures := r.waitFor(t, "4 6 8 9 11")
	if failures != "" || strings.Contains(events, "skip") {
		t.Fatalf("events %s, recovery failures %q: a skip is neither an event nor a loss", events, failures)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(asked, "; "); got != "history 6 2; recover map[epoch:e1 offset:9]" {
		t.Fatalf("asked %s: a skip must count as seen (no history for offset 5, recovery from 9)", got)
	}
}

// A live message whose offset jumps past the next one, with no gap frame,
// is filled from history like an announced gap: the missed ones (a skip
// among them) first, then the live ones.
func TestUnannouncedJumpIsFilledFromHistory(t *testing.T) {
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		switch f["type"] {
		case "subscribe":
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 3, "epoch": "e1", "id": f["id"]})
			send(socket, message(6, "e1"))
			send(socket, message(7, "e1"))
		case "history":
			if f["since"] != float64(3) || f["limit"] != float64(2) {
				send(socket, map[string]any{"type": "error", "code": "unexpected", "error": fmt.Sprint("history ", f), "id": f["id"]})
				return
			}
			send(socket, map[string]any{"type": "history", "channel": "doc:1", "offset": 7, "epoch": "e1", "id": f["id"],
				"publications": []any{message(4, "e1"), skip(5)}})
		}
	})
	var r recorder
	subscribeDoc(t, url, &r)
	if _, failures := r.waitFor(t, "4 6 7"); failures != "" {
		t.Fatalf("a jump history could fill was reported lost: %s", failures)
	}
}

// A live jump that history cannot fill is a recovery_failed (from the
// offset the stream goes on after), then the stream goes on; so is a new
// epoch nobody announced.
func TestUnfillableJumpOrNewEpochIsRecoveryFailed(t *testing.T) {
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		switch f["type"] {
		case "subscribe":
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 3, "epoch": "e1", "id": f["id"]})
			send(socket, message(6, "e1"))
		case "history":
			send(socket, map[string]any{"type": "history", "channel": "doc:1", "offset": 6, "epoch": "e1", "id": f["id"], "publications": []any{}})
			send(socket, message(1, "e2"))
		}
	})
	var r recorder
	subscribeDoc(t, url, &r)
	if _, failures := r.waitFor(t, "6 1"); failures != "5 e1; 0 e2" {
		t.Fatalf("recovery_failed events: %q, want 5 e1; 0 e2", failures)
	}
}

// A recovery whose backlog is too big to replay is answered recovered:true
// with a gap frame right behind the reply (and a live message right behind
// that): the client reads the backlog from history page by page, as long
// as pages say more, while the live messages wait, and reports nothing
// lost.
func TestRecoveryAnsweredWithAGapIsReadFromHistoryPages(t *testing.T) {
	var mu sync.Mutex
	var first *gws.Conn
	var asked []string
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case f["type"] == "subscribe" && f["recover"] == nil:
			first = socket
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 3, "epoch": "e1", "id": f["id"]})
		case f["type"] == "subscribe":
			asked = append(asked, fmt.Sprint("recover ", f["recover"]))
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 10, "epoch": "e1", "recovered": true, "id": f["id"]})
			send(socket, map[string]any{"type": "gap", "channel": "doc:1", "epoch": "e1", "offset": 10})
			send(socket, message(11, "e1"))
		case f["type"] == "history":
			asked = append(asked, fmt.Sprint("history ", f["since"], " ", f["limit"]))
			// Pages bounded by bytes: fewer than asked for, with more.
			pages := map[float64][]int{3: {4, 5}, 5: {6, 7, 8}, 8: {9, 10}}
			var pubs []any
			for _, o := range pages[f["since"].(float64)] {
				pubs = append(pubs, message(o, "e1"))
			}
			send(socket, map[string]any{"type": "history", "channel": "doc:1", "offset": 11, "epoch": "e1", "id": f["id"],
				"more": f["since"] != float64(8), "publications": pubs})
			if f["since"] == float64(5) {
				send(socket, message(12, "e1"))
			}
		}
	})
	var r recorder
	subscribeDoc(t, url, &r)
	mu.Lock()
	_ = first.WriteClose(1012, nil) // the broker restarts
	mu.Unlock()
	if _, failures := r.waitFor(t, "4 5 6 7 8 9 10 11 12"); failures != "" {
		t.Fatalf("a backlog history held was reported lost: %s", failures)
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(asked, "; "), "recover map[epoch:e1 offset:3]; history 3 7; history 5 5; history 8 2"; got != want {
		t.Fatalf("asked %s, want %s", got, want)
	}
}

// A catch-up cut short by a dropped connection is not a lost recovery:
// the re-subscription recovers from the last message handed on, and the
// live message held back meanwhile comes with it.
func TestCatchUpCutShortIsResumedByTheResubscription(t *testing.T) {
	var mu sync.Mutex
	var recovers []string
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case f["type"] == "subscribe" && f["recover"] == nil:
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 3, "epoch": "e1", "id": f["id"]})
			send(socket, map[string]any{"type": "gap", "channel": "doc:1", "epoch": "e1", "offset": 9})
			send(socket, message(10, "e1"))
		case f["type"] == "history":
			_ = socket.WriteClose(1012, nil) // the broker restarts before answering
		case f["type"] == "subscribe":
			recovers = append(recovers, fmt.Sprint(f["recover"]))
			send(socket, map[string]any{"type": "subscribed", "channel": "doc:1", "offset": 10, "epoch": "e1", "recovered": true, "id": f["id"]})
			for offset := 4; offset <= 10; offset++ {
				send(socket, message(offset, "e1"))
			}
		}
	})
	var r recorder
	subscribeDoc(t, url, &r)
	_, failures := r.waitFor(t, "4 5 6 7 8 9 10")
	if failures != "" {
		t.Fatalf("recovery_failed %s for a catch-up the reconnect resumed", failures)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(recovers) != 1 || recovers[0] != "map[epoch:e1 offset:3]" {
		t.Fatalf("re-subscribed with recover %v, want from offset 3 of e1", recovers)
	}
}
