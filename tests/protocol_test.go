package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

func TestProtocol(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0")

	t.Run("welcome names the user from the query, the header wins, else one is generated", func(t *testing.T) {
		c := srv.connect(t, "alice")
		if c.welcome["user"] != "alice" || c.welcome["connection_id"] == "" {
			t.Fatalf("welcome = %v", c.welcome)
		}
		h := srv.dial(t, "user=query-name", http.Header{"X-User-ID": {"header-name"}}, true)
		if w := h.expect("welcome"); w["user"] != "header-name" {
			t.Fatalf("X-User-ID should win over ?user, welcome = %v", w)
		}
		anon := srv.dial(t, "", nil, true)
		if w := anon.expect("welcome"); !strings.HasPrefix(w["user"].(string), "anon-") {
			t.Fatalf("generated user id = %v", w["user"])
		}
	})

	t.Run("an invalid user id is refused with HTTP 400", func(t *testing.T) {
		_, resp, err := gws.NewClient(clientEvents{&client{}}, &gws.ClientOption{Addr: srv.wsURL("user=%01bad")})
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("want HTTP 400, got err=%v resp=%v", err, resp)
		}
	})

	t.Run("a plain HTTP request to /ws gets 426", func(t *testing.T) {
		resp, err := http.Get("http://" + srv.addr + "/ws")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("status = %d", resp.StatusCode)
		}
	})

	t.Run("replies echo the id with its JSON type", func(t *testing.T) {
		c := srv.connect(t, "ids")
		for _, id := range []string{`7`, `"7"`, `-1.5e3`, `"x\"y"`, `12345678901234567890`} {
			c.send(`{"type":"ping","id":` + id + `}`)
			raw := string(c.next())
			if !strings.Contains(raw, `"id":`+id) || !strings.Contains(raw, `"type":"pong"`) {
				t.Fatalf("ping id %s answered with %s", id, raw)
			}
		}
		c.send(`{"type":"ping"}`)
		if raw := string(c.next()); strings.Contains(raw, `"id"`) {
			t.Fatalf("a reply to a frame without id carries one: %s", raw)
		}
		c.send(`{"type":"subscribe","channel":"ids:a","id":42}`)
		if raw := string(c.next()); !strings.Contains(raw, `"id":42`) || !strings.Contains(raw, `"type":"subscribed"`) {
			t.Fatalf("subscribed reply %s", raw)
		}
		c.send(`{"type":"message","channel":"ids:a","data":1,"id":"p1"}`)
		got := map[string]string{}
		for range 2 {
			raw := string(c.next())
			var m map[string]any
			_ = json.Unmarshal([]byte(raw), &m)
			got[m["type"].(string)] = raw
		}
		if !strings.Contains(got["published"], `"id":"p1"`) {
			t.Fatalf("published reply %q", got["published"])
		}
		if strings.Contains(got["message"], `"id"`) {
			t.Fatalf("the fan-out message must not carry the publisher's id: %s", got["message"])
		}
	})

	t.Run("bad frames get an error and the connection stays open", func(t *testing.T) {
		c := srv.connect(t, "mallory")
		big := strings.Repeat("x", 61<<10)
		cases := []struct {
			name, frame, code, text, id string
		}{
			{"invalid JSON", `{"type":`, "invalid_json", "Invalid JSON", ""},
			{"not JSON at all", `hello`, "invalid_json", "Invalid JSON", ""},
			{"an array", `[1,2]`, "invalid_frame", "Frame must be a JSON object", ""},
			{"a string", `"subscribe"`, "invalid_frame", "Frame must be a JSON object", ""},
			{"no type", `{"channel":"a"}`, "missing_type", "Missing message type", ""},
			{"null type", `{"type":null,"id":1}`, "missing_type", "Missing message type", "1"},
			{"numeric type", `{"type":5,"id":2}`, "missing_type", "Message type must be a string", "2"},
			{"unknown type", `{"type":"fly","id":"u"}`, "unknown_type", "Unknown message type: fly", `"u"`},
			{"object id", `{"type":"ping","id":{"a":1}}`, "invalid_id", "id must be a number or a string", ""},
			{"boolean id", `{"type":"ping","id":true}`, "invalid_id", "id must be a number or a string", ""},
			{"missing channel", `{"type":"subscribe","id":3}`, "invalid_channel", "Missing channel", "3"},
			{"channel not a string", `{"type":"subscribe","channel":7}`, "invalid_channel", "Invalid channel name", ""},
			{"empty channel", `{"type":"subscribe","channel":""}`, "invalid_channel", "Invalid channel name", ""},
			{"channel with a space", `{"type":"message","channel":"a b","data":1}`, "invalid_channel", "Invalid channel name", ""},
			{"channel too long", `{"type":"subscribe","channel":"` + strings.Repeat("c", 256) + `"}`, "invalid_channel", "Invalid channel name", ""},
			{"publish without data", `{"type":"message","channel":"a","id":4}`, "missing_data", "Missing data", "4"},
			{"oversized data", `{"type":"publish","channel":"a","data":"` + big + `"}`, "data_too_large", "Data exceeds 61440 bytes", ""},
			{"send without user", `{"type":"send","data":1}`, "invalid_user", "send needs a user", ""},
		}
		for _, tc := range cases {
			c.send(tc.frame)
			e := c.expect("error")
			if e["code"] != tc.code || !strings.HasPrefix(e["error"].(string), tc.text) {
				t.Errorf("%s: got %v, want code %s text %q", tc.name, e, tc.code, tc.text)
			}
			if tc.id != "" {
				raw, _ := json.Marshal(e["id"])
				if string(raw) != tc.id {
					t.Errorf("%s: error id = %s, want %s", tc.name, raw, tc.id)
				}
			}
		}
		if err := c.conn.WriteMessage(gws.OpcodeBinary, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		if e := c.expect("error"); e["code"] != "binary_not_supported" {
			t.Fatalf("binary frame: %v", e)
		}
		c.sendJSON(map[string]any{"type": "ping", "id": "still-open"})
		if p := c.expect("pong"); p["id"] != "still-open" {
			t.Fatalf("pong = %v", p)
		}
		if n := srv.metric(t, `switchboard_protocol_errors_total{code="invalid_json"}`); n < 2 {
			t.Fatalf("protocol error metric = %v", n)
		}
	})

	t.Run("subscribe, publish, unsubscribe", func(t *testing.T) {
		c := srv.connect(t, "sam")
		sub := c.subscribe("news:today")
		if sub["channel"] != "news:today" || sub["id"] != "sub-news:today" || sub["epoch"] == "" || sub["offset"] != float64(0) {
			t.Fatalf("subscribed = %v", sub)
		}
		c.sendJSON(map[string]any{"type": "publish", "channel": "news:today", "data": map[string]any{"headline": "hi"}})
		m := c.expect("message")
		if m["channel"] != "news:today" || m["from"] != "sam" || m["offset"] != float64(1) {
			t.Fatalf("message = %v", m)
		}
		if ts, _ := m["timestamp"].(float64); time.Since(time.UnixMilli(int64(ts))) > time.Minute {
			t.Fatalf("timestamp %v is not now", m["timestamp"])
		}
		if d, _ := m["data"].(map[string]any); d["headline"] != "hi" {
			t.Fatalf("data = %v", m["data"])
		}
		c.sendJSON(map[string]any{"type": "unsubscribe", "channel": "news:today", "id": 9})
		if u := c.expect("unsubscribed"); u["channel"] != "news:today" || u["id"] != float64(9) {
			t.Fatalf("unsubscribed = %v", u)
		}
		c.sendJSON(map[string]any{"type": "message", "channel": "news:today", "data": 2, "id": 10})
		if p := c.expect("published"); p["offset"] != float64(2) {
			t.Fatalf("published = %v", p)
		}
		c.expectNothing(200 * time.Millisecond)
		c.sendJSON(map[string]any{"type": "unsubscribe", "channel": "never:joined", "id": 11})
		if u := c.expect("unsubscribed"); u["id"] != float64(11) {
			t.Fatalf("unsubscribing a channel never joined: %v", u)
		}
	})

	t.Run("publishing without subscribing is allowed", func(t *testing.T) {
		listener, talker := srv.connect(t, "listener"), srv.connect(t, "talker")
		listener.subscribe("open:mic")
		talker.sendJSON(map[string]any{"type": "message", "channel": "open:mic", "data": "hello"})
		if m := listener.expect("message"); m["from"] != "talker" || m["data"] != "hello" {
			t.Fatalf("message = %v", m)
		}
		talker.expectNothing(100 * time.Millisecond)
	})

	t.Run("disconnect closes with 1000", func(t *testing.T) {
		c := srv.connect(t, "leaver")
		c.send(`{"type":"disconnect"}`)
		if code := c.expectClose(); code != 1000 {
			t.Fatalf("close code = %d", code)
		}
	})

}

func TestShutdownClosesClientsWithServiceRestart(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0")
	clients := []*client{srv.connect(t, "a"), srv.connect(t, "b")}
	clients[0].subscribe("x:1")
	srv.stop()
	for _, c := range clients {
		if code := c.expectClose(); code != 1012 {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestServesItsClientAndDemoPage(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	for path, want := range map[string]string{
		"/":                 "<title>Switchboard lobby</title>",
		"/switchboard.js":   "export class Switchboard",
		"/switchboard.d.ts": "export declare class Switchboard",
	} {
		resp, err := http.Get("http://" + srv.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d, %q not found", path, resp.StatusCode, want)
		}
	}
	if srv.status(t, "/no-such-page") != 404 {
		t.Error("unknown paths should be 404")
	}
}
