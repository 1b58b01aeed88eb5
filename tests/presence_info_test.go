package tests

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A token's info claim is what presence shows of its user; the info in a
// subscribe frame counts only when the token has no such claim.
func TestTokenInfoIsAuthoritative(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--jwt-secret", secret, "--max-info-bytes", "64")
	dial := func(user string, claims map[string]any) *client {
		c := srv.dial(t, "token="+token(t, user, time.Hour, claims), nil, true)
		c.expect("authenticated")
		c.expect("welcome")
		return c
	}
	watcher := dial("watcher", nil)
	watcher.sendJSON(map[string]any{"type": "subscribe", "channel": "room:1", "presence": true, "id": 1})
	watcher.expect("subscribed")
	watcher.expect("join")
	joins := func(user string, claims map[string]any, clientInfo any, want string) {
		t.Helper()
		c := dial(user, claims)
		c.sendJSON(map[string]any{"type": "subscribe", "channel": "room:1", "info": clientInfo, "id": 1})
		c.expect("subscribed")
		j := watcher.expect("join")
		info, _ := json.Marshal(j["info"])
		if j["user"] != user || string(info) != want {
			t.Fatalf("%s joined with info %s, want %s", user, info, want)
		}
	}
	pose := map[string]any{"name": "Admin"}
	joins("alice", map[string]any{"info": map[string]any{"name": "Alice"}}, pose, `{"name":"Alice"}`)
	joins("bob", nil, map[string]any{"name": "Bob"}, `{"name":"Bob"}`) // no claim: the client says
	joins("carol", map[string]any{"info": nil}, pose, `null`)          // a null claim: nothing to show
	// Bad input: a claim too large to show is still the token's word.
	joins("dave", map[string]any{"info": strings.Repeat("x", 100)}, pose, `null`)

	watcher.sendJSON(map[string]any{"type": "presence", "channel": "room:1", "id": 2})
	users, _ := json.Marshal(watcher.expect("presence")["users"])
	if want := `[{"connections":1,"info":{"name":"Alice"},"user":"alice"},{"connections":1,"info":{"name":"Bob"},"user":"bob"},` +
		`{"connections":1,"user":"carol"},{"connections":1,"user":"dave"},{"connections":1,"user":"watcher"}]`; string(users) != want {
		t.Fatalf("presence %s\nwant     %s", users, want)
	}

	// A refreshed token's info shows in the subscriptions made after it.
	erin := dial("erin", map[string]any{"info": map[string]any{"name": "Erin"}})
	erin.sendJSON(map[string]any{"type": "auth", "token": token(t, "erin", time.Hour, map[string]any{"info": map[string]any{"name": "Erin B"}})})
	erin.expect("authenticated")
	erin.sendJSON(map[string]any{"type": "subscribe", "channel": "room:1", "info": pose, "id": 1})
	erin.expect("subscribed")
	if j := watcher.expect("join"); j["user"] != "erin" || j["info"].(map[string]any)["name"] != "Erin B" {
		t.Fatalf("after a refresh: %v", j)
	}
}
