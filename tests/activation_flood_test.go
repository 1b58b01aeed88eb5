package tests

// Issue #13: asking for made-up channel names activates channel grains;
// a connection that does so as fast as it can, with the default limits,
// is held to its control budget, costs others nothing noticeable, and
// leaves a bounded number of channels behind.

import (
	"fmt"
	"testing"
	"time"
)

func TestFloodOfMadeUpChannelNamesIsBounded(t *testing.T) {
	t.Parallel()
	// Channels stay loaded for the default 30 s, so every activation the
	// flood causes is still counted when the gauge is read.
	srv := startServer(t, "--grain-idle-timeout", "30s")
	const names = 2000
	const controlRate, controlBurst = 50, 500 // the defaults
	bystander := join(t, srv, "bystander")
	bystander.subscribe(t, nil, "calm:1")
	channelsBefore := srv.metric(t, `switchboard_actors{kind="channel"}`)

	flooder := join(t, srv, "flooder")
	start := time.Now()
	sent := make(chan []string, 1)
	go func() {
		ids := make([]string, 0, names)
		for i := range names {
			id, err := flooder.ask(map[string]any{"type": "history", "channel": fmt.Sprintf("made-up:%d-%d", i, start.UnixNano())})
			if err != nil {
				break
			}
			ids = append(ids, id)
		}
		sent <- ids
	}()

	// Meanwhile another client's publications still go round within seconds.
	var slowest time.Duration
	peak := channelsBefore
	var ids []string
	for round := 0; ids == nil; round++ {
		began := time.Now()
		if _, code := bystander.publish("calm:1", round, 5*time.Second); code != "" {
			t.Fatalf("the bystander's publication %d during the flood: %s", round, code)
		}
		slowest = max(slowest, time.Since(began))
		peak = max(peak, srv.metric(t, `switchboard_actors{kind="channel"}`))
		select {
		case ids = <-sent:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if len(ids) != names {
		t.Fatalf("the flooder could send only %d of %d frames (%s)", len(ids), names, flooder.state())
	}
	answers := map[string]int{}
	for _, id := range ids {
		f, ok := flooder.reply(id, 30*time.Second)
		if !ok {
			t.Fatalf("no answer to the flooder's %s (%s); answers so far %v", id, flooder.state(), answers)
		}
		switch f.typ() {
		case "error":
			answers[f.code()]++
		default:
			answers[f.typ()]++
		}
	}
	elapsed := time.Since(start)
	peak = max(peak, srv.metric(t, `switchboard_actors{kind="channel"}`))
	activated := peak - channelsBefore
	t.Logf("%d made-up names in %s: answers %v; channel actors %v before, peak %v; slowest bystander round trip %s",
		names, elapsed.Round(time.Millisecond), answers, channelsBefore, peak, slowest.Round(time.Millisecond))

	if answers["rate_limited"] == 0 {
		t.Errorf("answers %v: the flood was never rate_limited", answers)
	}
	if answers["history"]+answers["rate_limited"]+answers["unavailable"] != names {
		t.Errorf("answers %v: want history pages, rate_limited or unavailable only", answers)
	}
	// The control budget admits at most its burst and its rate meanwhile;
	// a node-wide activation budget, or answering without activating, may
	// only make it fewer.
	if budget := float64(controlBurst) + controlRate*elapsed.Seconds() + 10; activated > budget {
		t.Errorf("%v channels activated by %d made-up names in %s: more than the control budget's %.0f", activated, names, elapsed, budget)
	}
	if answered := float64(answers["history"] + answers["unavailable"]); activated > answered {
		t.Errorf("%v channels activated, more than the %v history frames admitted", activated, answered)
	}
}
