package tests

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHTTPAPI(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--api-key", "s3cret")
	alice, bob1, bob2 := srv.connect(t, "alice"), srv.connect(t, "bob"), srv.connect(t, "bob")
	for _, c := range []*client{alice, bob1, bob2} {
		c.subscribe("lobby:7")
	}

	t.Run("requests without the right key get 401", func(t *testing.T) {
		for _, header := range []map[string]string{{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cre"}} {
			req, _ := http.NewRequest(http.MethodPost, "http://"+srv.addr+"/api/publish", strings.NewReader(`{"channel":"lobby:7","data":1}`))
			for k, v := range header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("headers %v: status %d", header, resp.StatusCode)
			}
		}
		alice.expectNothing(50 * time.Millisecond)
	})

	t.Run("bad requests get 4xx with a code", func(t *testing.T) {
		cases := []struct {
			method string
			body   any
			status int
			code   string
		}{
			{"publish", `{"channel":`, 400, "invalid_json"},
			{"publish", `[1]`, 400, "invalid_json"},
			{"publish", map[string]any{"data": 1}, 400, "invalid_channel"},
			{"publish", map[string]any{"channel": "bad channel", "data": 1}, 400, "invalid_channel"},
			{"publish", map[string]any{"channel": "lobby:7"}, 400, "missing_data"},
			{"publish", map[string]any{"channel": "lobby:7", "data": 1, "surprise": true}, 400, "invalid_json"},
			{"publish", map[string]any{"channel": "lobby:7", "data": strings.Repeat("x", 70<<10)}, 413, "data_too_large"},
			{"send", map[string]any{"data": 1}, 400, "invalid_user"},
			{"connected", map[string]any{}, 400, "invalid_user"},
			{"no-such-method", map[string]any{}, 404, "not_found"},
		}
		for _, tc := range cases {
			status, body := srv.api(t, tc.method, tc.body)
			if status != tc.status || body["code"] != tc.code || body["error"] == "" {
				t.Errorf("%s %v: got %d %v, want %d %s", tc.method, tc.body, status, body, tc.status, tc.code)
			}
		}
		resp, err := http.Get("http://" + srv.addr + "/api/publish")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unauthenticated GET: %d", resp.StatusCode)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr+"/api/publish", nil)
		req.Header.Set("X-API-Key", "s3cret")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
		alice.expectNothing(50 * time.Millisecond)
	})

	t.Run("publish reaches subscribers, excluding one user on request", func(t *testing.T) {
		status, body := srv.api(t, "publish", map[string]any{"channel": "lobby:7", "data": map[string]any{"round": 1}})
		if status != 200 || body["offset"] != float64(1) {
			t.Fatalf("publish: %d %v", status, body)
		}
		for _, c := range []*client{alice, bob1, bob2} {
			m := c.expect("message")
			if _, hasFrom := m["from"]; hasFrom || m["offset"] != float64(1) {
				t.Fatalf("server publication = %v", m)
			}
		}
		status, body = srv.api(t, "publish", map[string]any{"channel": "lobby:7", "data": "secret", "exclude_user": "bob"})
		if status != 200 || body["offset"] != float64(2) {
			t.Fatalf("publish: %d %v", status, body)
		}
		if m := alice.expect("message"); m["data"] != "secret" {
			t.Fatalf("alice got %v", m)
		}
		for _, bob := range []*client{bob1, bob2} {
			if s := bob.expect("skip"); s["offset"] != float64(2) {
				t.Fatalf("bob got %v, want a skip of offset 2", s)
			}
		}
		bob1.expectNothing(100 * time.Millisecond)
		bob2.expectNothing(0)
	})

	t.Run("send, broadcast, subscribers, connected", func(t *testing.T) {
		status, body := srv.api(t, "send", map[string]any{"user": "bob", "data": "psst"})
		if status != 200 || body["connections"] != float64(2) {
			t.Fatalf("send: %d %v", status, body)
		}
		for _, c := range []*client{bob1, bob2} {
			if d := c.expect("direct"); d["data"] != "psst" {
				t.Fatalf("direct = %v", d)
			}
		}
		alice.expectNothing(50 * time.Millisecond)

		status, body = srv.api(t, "broadcast", map[string]any{"data": "maintenance at noon"})
		if status != 200 || body["connections"] != float64(3) {
			t.Fatalf("broadcast: %d %v", status, body)
		}
		for _, c := range []*client{alice, bob1, bob2} {
			if d := c.expect("direct"); d["data"] != "maintenance at noon" {
				t.Fatalf("broadcast frame = %v", d)
			}
		}

		status, body = srv.api(t, "subscribers", map[string]any{"channel": "lobby:7"})
		if status != 200 || strings.Join(toStrings(body["users"]), ",") != "alice,bob" {
			t.Fatalf("subscribers: %d %v", status, body)
		}
		status, body = srv.api(t, "connected", map[string]any{"user": "bob"})
		if status != 200 || body["connected"] != true || body["connections"] != float64(2) {
			t.Fatalf("connected: %d %v", status, body)
		}
		status, body = srv.api(t, "connected", map[string]any{"user": "carol"})
		if status != 200 || body["connected"] != false {
			t.Fatalf("connected carol: %d %v", status, body)
		}
	})

	t.Run("disconnect closes every connection of the user with 4010", func(t *testing.T) {
		status, body := srv.api(t, "disconnect", map[string]any{"user": "bob"})
		if status != 200 || body["connections"] != float64(2) {
			t.Fatalf("disconnect: %d %v", status, body)
		}
		for _, c := range []*client{bob1, bob2} {
			if code := c.expectClose(); code != 4010 {
				t.Fatalf("close code %d", code)
			}
		}
		eventually(t, 5*time.Second, "bob to be gone", func() bool {
			_, body := srv.api(t, "connected", map[string]any{"user": "bob"})
			return body["connected"] == false
		})
		alice.sendJSON(map[string]any{"type": "ping", "id": 1})
		alice.expect("pong")
	})
}

func TestHTTPAPIIsOffWithoutKey(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	status, body := srv.api(t, "publish", map[string]any{"channel": "a", "data": 1})
	if status != 404 || body["code"] != "api_disabled" {
		t.Fatalf("got %d %v", status, body)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get("http://" + srv.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, len(list))
	for i, x := range list {
		out[i], _ = x.(string)
	}
	return out
}
