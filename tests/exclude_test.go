package tests

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// A publication that excludes a user (HTTP API exclude_user) reaches every
// other subscriber; each of the excluded user's connections gets a skip
// frame for its offset instead, and so do their history pages and
// recovery backlogs: their offsets stay contiguous and the data never
// reaches them.
func TestExcludedUserGetsSkips(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--api-key", "k", "--namespaces", "doc:history=100/5m")
	alice, bob1, bob2 := srv.connect(t, "alice"), srv.connect(t, "bob"), srv.connect(t, "bob")
	epoch := alice.subscribe("doc:1")["epoch"]
	bob1.subscribe("doc:1")
	bob2.subscribe("doc:1")
	publish := func(data string, exclude string) {
		t.Helper()
		body := map[string]any{"channel": "doc:1", "data": data}
		if exclude != "" {
			body["exclude_user"] = exclude
		}
		if status, res := srv.api(t, "publish", body); status != 200 {
			t.Fatalf("publish: %d %v", status, res)
		}
	}
	publish("one", "")
	publish("secret", "bob")
	publish("three", "")

	// Live: alice sees all three; bob sees the skip in the secret's place.
	for i, want := range []string{"one", "secret", "three"} {
		if m := alice.expect("message"); m["data"] != want || m["offset"] != float64(i+1) {
			t.Fatalf("alice's message %d: %v", i+1, m)
		}
	}
	for _, bob := range []*client{bob1, bob2} {
		if m := bob.expect("message"); m["offset"] != float64(1) {
			t.Fatalf("bob's first: %v", m)
		}
		if s := bob.expect("skip"); s["channel"] != "doc:1" || s["offset"] != float64(2) || s["epoch"] != epoch {
			t.Fatalf("bob's second: %v, want a skip of offset 2 in epoch %v", s, epoch)
		}
		if m := bob.expect("message"); m["data"] != "three" || m["offset"] != float64(3) {
			t.Fatalf("bob's third: %v", m)
		}
	}

	entries := func(publications any) string {
		var got []string
		for _, p := range publications.([]any) {
			m := p.(map[string]any)
			got = append(got, fmt.Sprint(m["type"], " ", m["offset"]))
		}
		return strings.Join(got, ", ")
	}
	history := func(c *client) (map[string]any, []byte) {
		c.send(`{"type":"history","channel":"doc:1","id":"h"}`)
		raw := c.next()
		h := decode(raw)
		if h["type"] != "history" {
			t.Fatalf("history answer: %s", raw)
		}
		return h, raw
	}
	if h, raw := history(bob1); entries(h["publications"]) != "message 1, skip 2, message 3" || bytes.Contains(raw, []byte("secret")) {
		t.Fatalf("bob's history: %s", raw)
	}
	if h, _ := history(alice); entries(h["publications"]) != "message 1, message 2, message 3" {
		t.Fatalf("alice's history: %s", entries(h["publications"]))
	}

	// Recovery from offset 1: bob's backlog has the skip, alice's the message.
	recoverFrom := func(user string) []string {
		c := srv.connect(t, user)
		c.sendJSON(map[string]any{"type": "subscribe", "channel": "doc:1", "id": 1, "recover": map[string]any{"offset": 1, "epoch": epoch}})
		if s := c.expect("subscribed"); s["recovered"] != true {
			t.Fatalf("%s's recovery: %v", user, s)
		}
		var got []string
		for range 2 {
			raw := c.next()
			if bytes.Contains(raw, []byte("secret")) && user == "bob" {
				t.Fatalf("bob's recovery backlog holds the secret: %s", raw)
			}
			m := decode(raw)
			got = append(got, fmt.Sprint(m["type"], " ", m["offset"]))
		}
		return got
	}
	if got := strings.Join(recoverFrom("bob"), ", "); got != "skip 2, message 3" {
		t.Fatalf("bob's recovery backlog: %s", got)
	}
	if got := strings.Join(recoverFrom("alice"), ", "); got != "message 2, message 3" {
		t.Fatalf("alice's recovery backlog: %s", got)
	}
}
