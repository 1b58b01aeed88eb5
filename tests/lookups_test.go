package tests

import (
	"fmt"
	"testing"
	"time"
)

// A node bounds how many channels it looks up without knowing where they
// live (each may be activated, which asks every node): a client
// subscribing to made-up channel names as fast as it can is answered
// unavailable past the budget, and everyone else goes on being served.
func TestLookupsOfNewChannelsAreBounded(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--lookup-rate-limit", "20", "--lookup-rate-burst", "40", "--control-rate-limit", "0", "--rate-limit", "0")
	regular := join(t, srv, "regular")
	regular.subscribe(t, nil, "room:known")
	regular.mustPublish(t, "room:known", "before")

	flooder := join(t, srv, "flooder")
	const names = 400
	ids := make([]string, names)
	for i := range ids {
		id, err := flooder.ask(map[string]any{"type": "subscribe", "channel": fmt.Sprintf("made:up:%d", i)})
		if err != nil {
			t.Fatalf("flooder: %v", err)
		}
		ids[i] = id
	}
	answered, refused := 0, 0
	for _, id := range ids {
		f, ok := flooder.reply(id, waitTimeout)
		if !ok {
			t.Fatalf("no answer to a subscribe of the flood (%s)", flooder.state())
		}
		answered++
		if f.typ() == "error" && f.code() == "unavailable" {
			refused++
		}
	}
	if refused == 0 || refused == answered {
		t.Fatalf("%d of %d lookups of made-up channels refused, want some refused past the budget and some served", refused, answered)
	}
	if counted := srv.metric(t, `switchboard_grain_lookups_total{result="refused"}`); counted < float64(refused) {
		t.Fatalf("switchboard_grain_lookups_total{result=\"refused\"} = %v, want at least %d", counted, refused)
	}
	start := time.Now()
	regular.mustPublish(t, "room:known", "during")
	if flooder.isClosed() {
		t.Fatal("the flooder was disconnected: a refused lookup is an error frame, not a close")
	}
	t.Logf("%d of %d lookups refused; a known channel answered in %s meanwhile", refused, answered, time.Since(start).Round(time.Millisecond))
}

// Asking the history of channels nobody uses activates nothing: the
// owner's relay answers that there is none.
func TestHistoryOfUnusedChannelsActivatesNothing(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--history-size", "10")
	reader := join(t, srv, "reader")
	for i := range 100 {
		f := reader.call(t, map[string]any{"type": "history", "channel": fmt.Sprintf("nobody:%d", i)}, waitTimeout)
		if f.typ() != "history" || len(f.m["publications"].([]any)) != 0 {
			t.Fatalf("history of an unused channel: %v", f)
		}
	}
	if active := srv.metric(t, `switchboard_actors{kind="channel"}`); active != 0 {
		t.Fatalf("%v channel grains active after asking the history of 100 unused channels, want 0", active)
	}
	// A channel in use still answers with what it holds.
	reader.subscribe(t, nil, "room:used")
	reader.mustPublish(t, "room:used", "kept")
	f := reader.call(t, map[string]any{"type": "history", "channel": "room:used"}, waitTimeout)
	if got := f.m["publications"].([]any); len(got) != 1 {
		t.Fatalf("history of a channel in use: %v", f)
	}
}
