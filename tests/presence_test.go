package tests

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPresence(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--namespaces", "lobby:presence,capacity=4", "--api-key", "k")

	t.Run("who is here, with tabs and info", func(t *testing.T) {
		alice1 := srv.connect(t, "alice")
		alice1.sendJSON(map[string]any{"type": "subscribe", "channel": "room:1", "presence": true, "info": map[string]any{"name": "Alice"}, "id": 1})
		alice1.expect("subscribed")
		if j := alice1.expect("join"); j["user"] != "alice" || j["info"].(map[string]any)["name"] != "Alice" {
			t.Fatalf("join = %v", j)
		}
		alice2 := srv.connect(t, "alice")
		alice2.subscribe("room:1") // a second tab: no second join
		bob := srv.connect(t, "bob")
		bob.subscribe("room:1")
		if j := alice1.expect("join"); j["user"] != "bob" {
			t.Fatalf("join = %v", j)
		}
		alice1.sendJSON(map[string]any{"type": "presence", "channel": "room:1", "id": "p"})
		p := alice1.expect("presence")
		raw, _ := json.Marshal(p["users"])
		if p["id"] != "p" || string(raw) != `[{"connections":2,"info":{"name":"Alice"},"user":"alice"},{"connections":1,"user":"bob"}]` {
			t.Fatalf("presence = %v", string(raw))
		}
		status, body := srv.api(t, "presence", map[string]any{"channel": "room:1"})
		if status != 200 || len(body["users"].([]any)) != 2 {
			t.Fatalf("API presence: %d %v", status, body)
		}
		// A large lobby answers in pages: "more", then ask after the last.
		alice1.sendJSON(map[string]any{"type": "presence", "channel": "room:1", "limit": 1, "id": "p1"})
		if p := alice1.expect("presence"); p["more"] != true || len(p["users"].([]any)) != 1 || p["users"].([]any)[0].(map[string]any)["user"] != "alice" {
			t.Fatalf("first page of one: %v", p)
		}
		alice1.sendJSON(map[string]any{"type": "presence", "channel": "room:1", "limit": 1, "after": "alice", "id": "p2"})
		if p := alice1.expect("presence"); p["more"] != nil || len(p["users"].([]any)) != 1 || p["users"].([]any)[0].(map[string]any)["user"] != "bob" {
			t.Fatalf("second and last page: %v", p)
		}

		// Leave comes when the last tab goes, not before.
		alice2.send(`{"type":"disconnect"}`)
		alice2.expectClose()
		bob.sendJSON(map[string]any{"type": "ping", "id": 1})
		bob.expect("pong")
		alice1.expectNothing(100 * time.Millisecond)
		bob.send(`{"type":"disconnect"}`)
		if l := alice1.expect("leave"); l["user"] != "bob" {
			t.Fatalf("leave = %v", l)
		}
	})

	t.Run("only subscribers see presence", func(t *testing.T) {
		outsider := srv.connect(t, "outsider")
		outsider.sendJSON(map[string]any{"type": "presence", "channel": "room:1", "id": 2})
		if e := outsider.expect("error"); e["code"] != "forbidden" || e["id"] != float64(2) {
			t.Fatalf("presence of a channel not subscribed: %v", e)
		}
	})

	t.Run("a presence namespace sends events to every subscriber", func(t *testing.T) {
		first := srv.connect(t, "first")
		first.subscribe("lobby:events")
		first.expect("join")
		srv.connect(t, "second").subscribe("lobby:events")
		if j := first.expect("join"); j["user"] != "second" {
			t.Fatalf("join = %v", j)
		}
	})

	t.Run("a lobby of 4 admits exactly 4 of 12 players joining at once", func(t *testing.T) {
		var mu sync.Mutex
		admitted, refused := 0, 0
		var wg sync.WaitGroup
		for i := range 12 {
			c := srv.connect(t, fmt.Sprintf("player%d", i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.sendJSON(map[string]any{"type": "subscribe", "channel": "lobby:race", "id": i})
				m := c.expect2("subscribed", "error")
				mu.Lock()
				defer mu.Unlock()
				if m["type"] == "subscribed" {
					admitted++
				} else if m["code"] == "channel_full" && m["id"] == float64(i) {
					refused++
				} else {
					t.Errorf("unexpected reply %v", m)
				}
			}()
		}
		wg.Wait()
		if admitted != 4 || refused != 8 {
			t.Fatalf("%d admitted, %d refused; want 4 and 8", admitted, refused)
		}
	})

	t.Run("capacity set through the API", func(t *testing.T) {
		if status, body := srv.api(t, "channel", map[string]any{"channel": "duel:1", "capacity": 2}); status != 200 {
			t.Fatalf("configure: %d %v", status, body)
		}
		if status, _ := srv.api(t, "channel", map[string]any{"channel": "duel:1", "capacity": -1}); status != 400 {
			t.Fatalf("negative capacity: %d", status)
		}
		srv.connect(t, "d1").subscribe("duel:1")
		srv.connect(t, "d2").subscribe("duel:1")
		third := srv.connect(t, "d3")
		third.sendJSON(map[string]any{"type": "subscribe", "channel": "duel:1"})
		if e := third.expect("error"); e["code"] != "channel_full" {
			t.Fatalf("third duelist: %v", e)
		}
		again := srv.connect(t, "d1") // a user already in counts once
		again.subscribe("duel:1")
	})
}

func TestHistoryAndRecovery(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--namespaces", "doc:history=1000/5m;short:history=10/5m")

	t.Run("a client that was away 500 publications gets exactly those, then live ones", func(t *testing.T) {
		editor := srv.connect(t, "editor")
		sub := editor.subscribe("doc:1")
		epoch := sub["epoch"].(string)
		writer := srv.connect(t, "writer")
		publish := func(i int) {
			writer.sendJSON(map[string]any{"type": "message", "channel": "doc:1", "data": i, "id": i})
			writer.expect("published")
		}
		publish(0)
		last := editor.expect("message")["offset"].(float64)
		editor.send(`{"type":"disconnect"}`)
		editor.expectClose()

		for i := 1; i <= 500; i++ {
			publish(i)
		}
		back := srv.connect(t, "editor")
		back.sendJSON(map[string]any{"type": "subscribe", "channel": "doc:1", "id": "r",
			"recover": map[string]any{"offset": last, "epoch": epoch}})
		if s := back.expect("subscribed"); s["recovered"] != true || s["offset"] != float64(501) {
			t.Fatalf("subscribed = %v", s)
		}
		go publish(501) // a live one, racing the recovery
		for i := 1; i <= 501; i++ {
			m := back.expect("message")
			if m["data"] != float64(i) || m["offset"] != last+float64(i) || m["epoch"] != epoch {
				t.Fatalf("recovered message %d: %v", i, m)
			}
		}
		back.expectNothing(100 * time.Millisecond)
	})

	t.Run("an offset out of history, or another epoch, is not recovered", func(t *testing.T) {
		c := srv.connect(t, "late")
		sub := c.subscribe("short:1")
		w := srv.connect(t, "w")
		for i := range 30 {
			w.sendJSON(map[string]any{"type": "message", "channel": "short:1", "data": i, "id": i})
			w.expect("published")
		}
		late := srv.connect(t, "late2")
		late.sendJSON(map[string]any{"type": "subscribe", "channel": "short:1", "recover": map[string]any{"offset": 5, "epoch": sub["epoch"]}})
		if s := late.expect("subscribed"); s["recovered"] != false || s["offset"] != float64(30) || s["epoch"] != sub["epoch"] {
			t.Fatalf("out of history: %v", s)
		}
		late.expectNothing(100 * time.Millisecond)
		other := srv.connect(t, "late3")
		other.sendJSON(map[string]any{"type": "subscribe", "channel": "short:1", "recover": map[string]any{"offset": 29, "epoch": "not-it"}})
		if s := other.expect("subscribed"); s["recovered"] != false {
			t.Fatalf("other epoch: %v", s)
		}
		current := srv.connect(t, "late4")
		current.sendJSON(map[string]any{"type": "subscribe", "channel": "short:1", "recover": map[string]any{"offset": 28, "epoch": sub["epoch"]}})
		if s := current.expect("subscribed"); s["recovered"] != true {
			t.Fatalf("one behind: %v", s)
		}
		if m := current.expect("message"); m["offset"] != float64(29) {
			t.Fatalf("recovered %v", m)
		}
		if m := current.expect("message"); m["offset"] != float64(30) {
			t.Fatalf("recovered %v", m)
		}
	})

	t.Run("history returns stored publications", func(t *testing.T) {
		c := srv.connect(t, "reader")
		c.sendJSON(map[string]any{"type": "history", "channel": "short:1", "since": 25, "limit": 3, "id": 7})
		h := c.expect("history")
		pubs := h["publications"].([]any)
		if h["id"] != float64(7) || h["offset"] != float64(30) || len(pubs) != 3 || pubs[0].(map[string]any)["offset"] != float64(26) {
			t.Fatalf("history = %v", h)
		}
		c.sendJSON(map[string]any{"type": "history", "channel": "short:1", "limit": -1})
		if e := c.expect("error"); e["code"] != "invalid_frame" {
			t.Fatalf("bad limit: %v", e)
		}
		c.sendJSON(map[string]any{"type": "subscribe", "channel": "short:1", "recover": map[string]any{"offset": "x"}})
		if e := c.expect("error"); e["code"] != "invalid_recover" {
			t.Fatalf("bad recover: %v", e)
		}
	})
}

func TestCompareAndPublish(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0")
	watcher := srv.connect(t, "watcher")
	watcher.subscribe("edit:1")
	seed := srv.connect(t, "seed")
	seed.sendJSON(map[string]any{"type": "message", "channel": "edit:1", "data": "v1", "id": 1})
	base := seed.expect("published")["offset"].(float64)
	watcher.expect("message")

	const writers = 8
	results := make(chan map[string]any, writers)
	for i := range writers {
		c := srv.connect(t, fmt.Sprintf("writer%d", i))
		go func() {
			c.sendJSON(map[string]any{"type": "message", "channel": "edit:1", "data": fmt.Sprintf("edit by %d", i), "expect_offset": base, "id": i})
			results <- c.expect2("published", "error")
		}()
	}
	won := 0
	for range writers {
		r := <-results
		switch {
		case r["type"] == "published" && r["offset"] == base+1:
			won++
		case r["type"] == "error" && r["code"] == "offset_mismatch" && r["offset"] == base+1 && strings.Contains(r["error"].(string), "edit:1"):
		default:
			t.Fatalf("unexpected reply %v", r)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won, want exactly 1", won)
	}
	watcher.expect("message")
	watcher.expectNothing(100 * time.Millisecond)
}
