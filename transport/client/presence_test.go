package client

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// Joins and leaves the server coalesced into one presence_batch frame
// reach the application one by one, in order, as join and leave events.
func TestPresenceBatchIsHandedOnOneByOne(t *testing.T) {
	url := startScripted(t, func(socket *gws.Conn, f map[string]any) {
		if f["type"] == "subscribe" {
			send(socket, map[string]any{"type": "subscribed", "channel": "lobby", "offset": 0, "epoch": "e", "id": f["id"]})
			send(socket, map[string]any{"type": "join", "channel": "lobby", "user": "a"})
			send(socket, map[string]any{"type": "presence_batch", "channel": "lobby", "events": []any{
				map[string]any{"type": "join", "channel": "lobby", "user": "b"},
				map[string]any{"type": "leave", "channel": "lobby", "user": "a"},
				map[string]any{"type": "join", "channel": "lobby", "user": "c"},
			}})
		}
	})
	var mu sync.Mutex
	var seen []string
	c, err := Dial(context.Background(), Options{URL: url, User: "u", OnEvent: func(e Event) {
		var event struct{ Type, User string }
		_ = json.Unmarshal(e.Frame, &event)
		mu.Lock()
		seen = append(seen, e.Type+" "+event.User)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Subscribe(context.Background(), "lobby", SubscribeOptions{Presence: true}); err != nil {
		t.Fatal(err)
	}
	want := "join a, join b, leave a, join c"
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := strings.Join(seen, ", ")
		mu.Unlock()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events %q, want %q", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
