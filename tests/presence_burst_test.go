package tests

import (
	"fmt"
	"sync"
	"testing"
)

// Users who arrive in a lobby together are announced together: a
// subscriber learns of every one of them, in a few frames rather than one
// per user, and nobody is closed for a full outbox.
func TestJoinsInABurstAreCoalesced(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0")
	const users = 200
	watcher := join(t, srv, "watcher")
	watcher.subscribe(t, map[string]any{"presence": true}, "lobby:burst")

	var wg sync.WaitGroup
	arrivals := make([]*peer, users)
	for i := range arrivals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := join(t, srv, fmt.Sprintf("player%03d", i))
			p.subscribe(t, map[string]any{"presence": true}, "lobby:burst")
			arrivals[i] = p
		}()
	}
	wg.Wait()

	joined := func() (map[string]bool, int) {
		seen, frames := map[string]bool{}, 0
		for _, f := range watcher.frames("", "lobby:burst") {
			switch f.typ() {
			case "join":
				frames++
				seen[f.m["user"].(string)] = true
			case "presence_batch":
				frames++
				for _, e := range f.m["events"].([]any) {
					event := e.(map[string]any)
					if event["type"] == "join" {
						seen[event["user"].(string)] = true
					}
				}
			}
		}
		return seen, frames
	}
	if !within(waitTimeout, func() bool { seen, _ := joined(); return len(seen) == users+1 }) {
		seen, _ := joined()
		t.Fatalf("the watcher learned of %d of %d arrivals", len(seen), users+1)
	}
	_, frames := joined()
	if frames > users/4 {
		t.Fatalf("%d arrivals took %d presence frames to announce, want them coalesced (at most %d)", users, frames, users/4)
	}
	for _, p := range append(arrivals, watcher) {
		if p.isClosed() {
			t.Fatalf("%s was closed during the burst", p.user)
		}
	}
	t.Logf("%d arrivals announced to one subscriber in %d frames", users, frames)
}
