package tests

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// After many connect/subscribe/disconnect cycles the broker holds no more
// goroutines, actors, subscriptions or connections than before.
func TestDisconnectCleansUpEverything(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	series := []string{
		"switchboard_connections",
		"switchboard_subscriptions",
		`switchboard_actors{kind="connection"}`,
		`switchboard_actors{kind="channel"}`,
		`switchboard_actors{kind="session"}`,
	}
	// Warm up once so lazily started runtime goroutines count in the baseline.
	warm := srv.connect(t, "warm")
	warm.subscribe("churn:0")
	warm.send(`{"type":"disconnect"}`)
	warm.expectClose()
	settle := func() map[string]float64 {
		values := map[string]float64{}
		eventually(t, 10*time.Second, "the broker to settle", func() bool {
			for _, s := range series {
				values[s] = srv.metric(t, s)
				if values[s] != 0 {
					return false
				}
			}
			return true
		})
		values["go_goroutines"] = srv.metric(t, "go_goroutines")
		return values
	}
	before := settle()

	const cycles, workers = 1000, 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < cycles; i += workers {
				c := srv.connect(t, fmt.Sprintf("churn-%d", i%97))
				c.subscribe(fmt.Sprintf("churn:%d", i%50))
				if i%2 == 0 {
					c.send(`{"type":"disconnect"}`)
					c.expectClose()
				} else {
					_ = c.conn.NetConn().Close() // an abrupt drop must clean up too
				}
			}
		}()
	}
	wg.Wait()
	if srv.metric(t, "switchboard_messages_in_total") < cycles {
		t.Fatalf("the cycles did not reach the broker")
	}
	after := settle()
	eventually(t, 10*time.Second, "goroutines back to baseline", func() bool {
		after["go_goroutines"] = srv.metric(t, "go_goroutines")
		return after["go_goroutines"] <= before["go_goroutines"]+2
	})
	t.Logf("before %v, after %v", before, after)
}
