package tests

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFanout(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0")

	t.Run("two users chat and see one order", func(t *testing.T) {
		alice, bob := srv.connect(t, "alice"), srv.connect(t, "bob")
		alice.subscribe("chat:room1")
		bob.subscribe("chat:room1")
		alice.sendJSON(map[string]any{"type": "message", "channel": "chat:room1", "data": "hi bob"})
		bob.sendJSON(map[string]any{"type": "message", "channel": "chat:room1", "data": "hi alice"})
		var seen [2][]string
		for i, c := range []*client{alice, bob} {
			for range 2 {
				m := c.expect("message")
				seen[i] = append(seen[i], fmt.Sprintf("%v:%v:%v", m["offset"], m["from"], m["data"]))
			}
		}
		if strings.Join(seen[0], ",") != strings.Join(seen[1], ",") {
			t.Fatalf("alice saw %v, bob saw %v", seen[0], seen[1])
		}
	})

	t.Run("send reaches every connection of a user", func(t *testing.T) {
		alice := srv.connect(t, "alice2")
		tab1, tab2 := srv.connect(t, "bob2"), srv.connect(t, "bob2")
		alice.sendJSON(map[string]any{"type": "send", "user": "bob2", "data": map[string]any{"move": "e4"}, "id": 1})
		if s := alice.expect("sent"); s["connections"] != float64(2) || s["user"] != "bob2" || s["id"] != float64(1) {
			t.Fatalf("sent = %v", s)
		}
		for _, tab := range []*client{tab1, tab2} {
			d := tab.expect("direct")
			if d["from"] != "alice2" || d["data"].(map[string]any)["move"] != "e4" {
				t.Fatalf("direct = %v", d)
			}
		}
		alice.sendJSON(map[string]any{"type": "send", "user": "nobody-here", "data": 1, "id": 2})
		if s := alice.expect("sent"); s["connections"] != float64(0) {
			t.Fatalf("send to an absent user: %v", s)
		}
	})

	t.Run("one publication reaches many subscribers", func(t *testing.T) {
		const n = 200
		subs := make([]*client, n)
		for i := range subs {
			subs[i] = srv.connect(t, fmt.Sprintf("fan-%d", i))
			subs[i].subscribe("lobby:big")
		}
		pub := srv.connect(t, "announcer")
		pub.sendJSON(map[string]any{"type": "message", "channel": "lobby:big", "data": "start", "id": 1})
		pub.expect("published")
		for i, c := range subs {
			if m := c.expect("message"); m["data"] != "start" || m["offset"] != float64(1) {
				t.Fatalf("subscriber %d got %v", i, m)
			}
		}
	})

	t.Run("a burst of 1000 publications arrives complete and in order", func(t *testing.T) {
		const n = 1000
		readers := []*client{srv.connect(t, "r1"), srv.connect(t, "r2"), srv.connect(t, "r3")}
		for _, r := range readers {
			r.subscribe("burst:1")
		}
		pub := srv.connect(t, "burster")
		for i := range n {
			pub.sendJSON(map[string]any{"type": "message", "channel": "burst:1", "data": i})
		}
		var wg sync.WaitGroup
		for _, r := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					m := r.expect("message")
					if m["data"] != float64(i) || m["offset"] != float64(i+1) {
						t.Errorf("message %d: got data %v offset %v", i, m["data"], m["offset"])
						return
					}
				}
			}()
		}
		wg.Wait()
	})
}

func TestSlowConsumerIsCutOffWhileOthersKeepReceiving(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--outbox-messages", "64", "--outbox-bytes", "262144")
	healthy := srv.connect(t, "healthy")
	healthy.subscribe("game:1")
	stalled := srv.dial(t, "user=stalled", nil, false) // never reads
	stalled.sendJSON(map[string]any{"type": "subscribe", "channel": "game:1"})
	eventually(t, 5*time.Second, "both subscriptions", func() bool {
		return srv.metric(t, "switchboard_subscriptions") == 2
	})

	pub := srv.connect(t, "publisher")
	data := strings.Repeat("z", 16<<10)
	const most = 3000 // 48 MB: far beyond what loopback socket buffers hold
	sent := 0
	for sent < most && srv.metric(t, "switchboard_slow_consumer_closes_total") == 0 {
		for range 50 {
			sent++
			pub.sendJSON(map[string]any{"type": "message", "channel": "game:1", "data": data, "id": sent})
			pub.expect("published")
			if m := healthy.expect("message"); m["offset"] != float64(sent) {
				t.Fatalf("healthy subscriber got offset %v, want %d", m["offset"], sent)
			}
		}
	}
	if srv.metric(t, "switchboard_slow_consumer_closes_total") != 1 {
		t.Fatalf("stalled reader not cut off after %d publications", sent)
	}
	for range 20 {
		sent++
		pub.sendJSON(map[string]any{"type": "message", "channel": "game:1", "data": "after", "id": sent})
		pub.expect("published")
		if m := healthy.expect("message"); m["offset"] != float64(sent) {
			t.Fatalf("after the cut-off the healthy subscriber got offset %v, want %d", m["offset"], sent)
		}
	}
	eventually(t, 5*time.Second, "the stalled connection to be gone", func() bool {
		return srv.metric(t, "switchboard_subscriptions") == 1 && srv.metric(t, "switchboard_connections") == 2
	})
	t.Logf("stalled reader cut off after %d publications of 16 KiB", sent-20)
}
