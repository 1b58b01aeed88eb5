package tests

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"
)

const secret = "test-secret"

func token(t testing.TB, user string, ttl time.Duration, extra map[string]any) string {
	claims := jwt.MapClaims{"sub": user, "exp": time.Now().Add(ttl).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// expectRefused asserts an authentication error with text, then close 4001.
func (c *client) expectRefused(text string) {
	c.t.Helper()
	if e := c.expect("error"); e["error"] != text {
		c.t.Fatalf("error = %v, want %q", e, text)
	}
	if code := c.expectClose(); code != 4001 {
		c.t.Fatalf("close code %d, want 4001", code)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--jwt-secret", secret, "--auth-timeout", "500ms", "--rate-limit", "0", "--jwt-leeway", "0s")
	// A bystander keeps working through every failure below.
	bystander := srv.dial(t, "token="+token(t, "bystander", time.Hour, nil), nil, true)
	bystander.expect("authenticated")
	bystander.expect("welcome")
	bystander.subscribe("watch:1")
	defer func() {
		bystander.sendJSON(map[string]any{"type": "message", "channel": "watch:1", "data": "still here"})
		if m := bystander.expect("message"); m["data"] != "still here" {
			t.Fatalf("bystander got %v", m)
		}
	}()

	t.Run("token in the query", func(t *testing.T) {
		c := srv.dial(t, "token="+token(t, "alice", time.Hour, nil), nil, true)
		if a := c.expect("authenticated"); a["user_id"] != "alice" {
			t.Fatalf("authenticated = %v", a)
		}
		if w := c.expect("welcome"); w["user"] != "alice" {
			t.Fatalf("welcome = %v", w)
		}
	})

	t.Run("the user parameter cannot override the token", func(t *testing.T) {
		c := srv.dial(t, "user=root&token="+token(t, "alice", time.Hour, nil), http.Header{"X-User-ID": {"root"}}, true)
		if a := c.expect("authenticated"); a["user_id"] != "alice" {
			t.Fatalf("authenticated = %v", a)
		}
	})

	t.Run("token as a subprotocol next to switchboard.v1", func(t *testing.T) {
		header := http.Header{}
		header.Set("Sec-WebSocket-Protocol", "switchboard.v1, auth."+token(t, "bob", time.Hour, nil))
		c := srv.dial(t, "", header, true)
		if c.conn.SubProtocol() != "switchboard.v1" {
			t.Fatalf("server answered protocol %q", c.conn.SubProtocol())
		}
		c.expect("authenticated")
	})

	t.Run("token as the only subprotocol is echoed", func(t *testing.T) {
		entry := "auth." + token(t, "carol", time.Hour, nil)
		header := http.Header{}
		header.Set("Sec-WebSocket-Protocol", entry)
		c := srv.dial(t, "", header, true)
		if c.conn.SubProtocol() != entry {
			t.Fatalf("server answered protocol %q", c.conn.SubProtocol())
		}
		c.expect("authenticated")
	})

	t.Run("token in the first frame", func(t *testing.T) {
		c := srv.dial(t, "", nil, true)
		c.sendJSON(map[string]any{"type": "auth", "token": token(t, "dave", time.Hour, nil)})
		if a := c.expect("authenticated"); a["user_id"] != "dave" {
			t.Fatalf("authenticated = %v", a)
		}
		c.expect("welcome")
		c.subscribe("chat:1")
	})

	failures := []struct {
		name, query, first, text string
	}{
		{"no token, another frame first", "", `{"type":"subscribe","channel":"chat:1"}`, "No authentication token provided"},
		{"no token, invalid JSON first", "", `{oops`, "No authentication token provided"},
		{"auth frame without token", "", `{"type":"auth"}`, "No authentication token provided"},
		{"expired token", "token=" + token(t, "eve", -time.Minute, nil), "", "Token expired"},
		{"forged signature", "token=" + token(t, "eve", time.Hour, nil) + "x", "", "Invalid token"},
		{"garbage token", "token=abc", "", "Invalid token"},
		{"alg none", "token=eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJldmUiLCJleHAiOjk5OTk5OTk5OTl9.", "", "Invalid token"},
		{"not yet valid", "token=" + token(t, "eve", time.Hour, map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}), "", "Invalid token"},
		{"bad token in the first frame", "", `{"type":"auth","token":"abc"}`, "Invalid token"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			c := srv.dial(t, tc.query, nil, true)
			if tc.first != "" {
				c.send(tc.first)
			}
			c.expectRefused(tc.text)
		})
	}

	t.Run("no frame at all times out", func(t *testing.T) {
		c := srv.dial(t, "", nil, true)
		c.expectRefused("Authentication timeout")
	})

	t.Run("a refreshed token keeps the connection open; expiry closes it", func(t *testing.T) {
		short := srv.dial(t, "token="+token(t, "frank", 2*time.Second, nil), nil, true)
		short.expect("authenticated")
		short.expect("welcome")
		refreshed := srv.dial(t, "token="+token(t, "frank", 2*time.Second, nil), nil, true)
		refreshed.expect("authenticated")
		refreshed.expect("welcome")
		refreshed.sendJSON(map[string]any{"type": "auth", "token": token(t, "frank", time.Hour, nil), "id": 1})
		refreshed.expect("authenticated")
		// jwt exp has second precision.
		start := time.Now()
		short.expectRefused("Token expired")
		if time.Since(start) < time.Second {
			t.Fatalf("closed too early")
		}
		refreshed.sendJSON(map[string]any{"type": "ping", "id": 2})
		refreshed.expect("pong")
	})

	t.Run("a refresh for another user is refused", func(t *testing.T) {
		c := srv.dial(t, "token="+token(t, "grace", time.Hour, nil), nil, true)
		c.expect("authenticated")
		c.expect("welcome")
		c.sendJSON(map[string]any{"type": "auth", "token": token(t, "heidi", time.Hour, nil)})
		c.expectRefused("Token is for another user")
	})
}

func TestPermissionsFromClaims(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--jwt-secret", secret, "--publish-deny", "presence:*", "--subscribe-default", "public:*,presence:*")
	limited := srv.dial(t, "token="+token(t, "ivan", time.Hour, map[string]any{
		"channels": []string{"lobby:42", "chat:*"}, "publish": []string{"chat:*"}}), nil, true)
	limited.expect("authenticated")
	limited.expect("welcome")
	limited.subscribe("chat:general")
	limited.subscribe("lobby:42")
	for _, tc := range []struct{ frame, text string }{
		{`{"type":"subscribe","channel":"lobby:43","id":1}`, "Not allowed to subscribe to lobby:43"},
		{`{"type":"message","channel":"lobby:42","data":1,"id":2}`, "Not allowed to publish to lobby:42"},
		{`{"type":"message","channel":"presence:x","data":1,"id":3}`, "Not allowed to publish to presence:x"},
	} {
		limited.send(tc.frame)
		if e := limited.expect("error"); e["code"] != "forbidden" || e["error"] != tc.text || e["id"] == nil {
			t.Fatalf("%s: %v", tc.frame, e)
		}
	}
	limited.sendJSON(map[string]any{"type": "message", "channel": "chat:general", "data": "ok"})
	limited.expect("message")

	// Without claims the defaults apply; deny rules hold for everyone.
	plain := srv.dial(t, "token="+token(t, "judy", time.Hour, nil), nil, true)
	plain.expect("authenticated")
	plain.expect("welcome")
	plain.subscribe("public:news")
	plain.subscribe("presence:room")
	plain.sendJSON(map[string]any{"type": "subscribe", "channel": "chat:general", "id": 1})
	if e := plain.expect("error"); e["code"] != "forbidden" {
		t.Fatalf("default subscribe: %v", e)
	}
	plain.sendJSON(map[string]any{"type": "message", "channel": "presence:room", "data": 1, "id": 2})
	if e := plain.expect("error"); e["code"] != "forbidden" {
		t.Fatalf("presence publish: %v", e)
	}
}

// A refresh replaces the connection's permissions: subscriptions the new
// token does not allow end at once, for the channel too.
func TestRefreshedClaimsApplyAtOnce(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--jwt-secret", secret, "--api-key", "key")
	claims := func(patterns ...string) map[string]any {
		return map[string]any{"channels": patterns, "publish": patterns}
	}
	alice := srv.dial(t, "token="+token(t, "alice", time.Hour, claims("chat:*", "lobby:*")), nil, true)
	alice.expect("authenticated")
	alice.expect("welcome")
	alice.subscribe("chat:a")
	alice.subscribe("lobby:1")
	watcher := srv.dial(t, "token="+token(t, "watcher", time.Hour, nil), nil, true)
	watcher.expect("authenticated")
	watcher.expect("welcome")
	watcher.sendJSON(map[string]any{"type": "subscribe", "channel": "lobby:1", "presence": true, "id": 1})
	watcher.expect("subscribed")
	watcher.expect("join")

	alice.sendJSON(map[string]any{"type": "auth", "token": token(t, "alice", time.Hour, claims("chat:*"))})
	alice.expect("authenticated")
	if u := alice.expect("unsubscribed"); u["channel"] != "lobby:1" || u["code"] != "forbidden" || u["reason"] == "" || u["id"] != nil {
		t.Fatalf("revocation frame %v", u)
	}
	if l := watcher.expect("leave"); l["user"] != "alice" {
		t.Fatalf("watcher saw %v", l)
	}
	if _, res := srv.api(t, "subscribers", map[string]any{"channel": "lobby:1"}); fmt.Sprint(res["users"]) != "[watcher]" {
		t.Fatalf("the channel still knows a revoked subscriber: %v", res)
	}
	for _, frame := range []map[string]any{
		{"type": "subscribe", "channel": "lobby:1", "id": 2},
		{"type": "message", "channel": "lobby:1", "data": 1, "id": 3},
	} {
		alice.sendJSON(frame)
		if e := alice.expect("error"); e["code"] != "forbidden" {
			t.Fatalf("%v after the refresh: %v", frame, e)
		}
	}
	// What stays allowed keeps flowing, and nothing of lobby:1 comes before it.
	watcher.sendJSON(map[string]any{"type": "message", "channel": "lobby:1", "data": "gone", "id": 4})
	watcher.expect2("message", "published")
	watcher.expect2("message", "published")
	watcher.sendJSON(map[string]any{"type": "message", "channel": "chat:a", "data": "kept", "id": 5})
	if m := alice.expect("message"); m["channel"] != "chat:a" || m["data"] != "kept" {
		t.Fatalf("after the revocation alice got %v", m)
	}
	// A refresh widens as well as narrows.
	alice.sendJSON(map[string]any{"type": "auth", "token": token(t, "alice", time.Hour, claims("*"))})
	alice.expect("authenticated")
	alice.subscribe("lobby:1")
	// A refresh whose claims are not lists of patterns is an invalid token.
	alice.sendJSON(map[string]any{"type": "auth", "token": token(t, "alice", time.Hour, map[string]any{"channels": "lobby:1"})})
	alice.expectRefused("Invalid token")
}

// A send is governed like a publication: the token's send claim (user id
// patterns), else --send-default (anyone), never past --send-deny.
func TestSendPermissions(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--jwt-secret", secret, "--send-deny", "bot:*")
	dial := func(user string, claims map[string]any) *client {
		c := srv.dial(t, "token="+token(t, user, time.Hour, claims), nil, true)
		c.expect("authenticated")
		c.expect("welcome")
		return c
	}
	bob := dial("bob", nil)
	helpdesk := dial("support:1", nil)
	send := func(from *client, to string, data string, id int) map[string]any {
		from.sendJSON(map[string]any{"type": "send", "user": to, "data": data, "id": id})
		return from.expect2("sent", "error")
	}
	forbidden := func(reply map[string]any, to string) {
		t.Helper()
		if reply["code"] != "forbidden" || reply["error"] != "Not allowed to send to "+to || reply["id"] == nil {
			t.Fatalf("send to %s: %v", to, reply)
		}
	}
	received := func(c *client, want string) {
		t.Helper()
		if d := c.expect("direct"); d["data"] != want {
			t.Fatalf("direct %v, want %q", d, want)
		}
	}

	plain := dial("carol", nil) // no claim: anyone but the denied
	if r := send(plain, "bob", "hi", 1); r["type"] != "sent" || r["connections"] != float64(1) {
		t.Fatalf("send without a claim: %v", r)
	}
	received(bob, "hi")
	forbidden(send(plain, "bot:7", "x", 2), "bot:7")

	limited := dial("dave", map[string]any{"send": []string{"support:*"}})
	if r := send(limited, "support:1", "help", 3); r["type"] != "sent" {
		t.Fatalf("send the claim allows: %v", r)
	}
	received(helpdesk, "help")
	forbidden(send(limited, "bob", "psst", 4), "bob")
	forbidden(send(dial("erin", map[string]any{"send": []string{"*"}}), "bot:1", "x", 5), "bot:1") // no claim lifts a deny
	send(plain, "bob", "again", 6)
	received(bob, "again") // nothing of the refused send arrived before it

	// A send claim that is not a list of patterns makes the token invalid.
	srv.dial(t, "token="+token(t, "frank", time.Hour, map[string]any{"send": "bob"}), nil, true).expectRefused("Invalid token")
}

func TestRSAKeyRefusesHMACToken(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(t.TempDir(), "rsa.pem")
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, "--jwt-public-key", path)
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(pemBytes)
	srv.dial(t, "token="+forged, nil, true).expectRefused("Invalid token")
	good, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "ok", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(key)
	srv.dial(t, "token="+good, nil, true).expect("authenticated")
}

func TestTokenCommandMintsUsableTokens(t *testing.T) {
	t.Parallel()
	out, err := runBroker(t, "token", "--user", "zoe", "--secret", secret, "--channels", "game:*", "--ttl", "1m")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	srv := startServer(t, "--jwt-secret", secret)
	c := srv.dial(t, "token="+strings.TrimSpace(out), nil, true)
	if a := c.expect("authenticated"); a["user_id"] != "zoe" {
		t.Fatalf("authenticated = %v", a)
	}
	c.expect("welcome")
	c.sendJSON(map[string]any{"type": "subscribe", "channel": "chat:1", "id": 1})
	if e := c.expect("error"); e["code"] != "forbidden" {
		t.Fatalf("the channels claim was not honoured: %v", e)
	}
}

func TestOriginAllowList(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--allowed-origins", "https://game.example,https://*.example.org")
	for origin, ok := range map[string]bool{"https://game.example": true, "https://a.example.org": true, "https://evil.example": false, "": true} {
		header := http.Header{}
		if origin != "" {
			header.Set("Origin", origin)
		}
		_, resp, err := gws.NewClient(clientEvents{&client{closed: make(chan struct{}), frames: make(chan []byte, 10)}}, &gws.ClientOption{Addr: srv.wsURL("user=o"), RequestHeader: header})
		if ok && err != nil {
			t.Errorf("origin %q refused: %v", origin, err)
		}
		if !ok && (err == nil || resp == nil || resp.StatusCode != http.StatusForbidden) {
			t.Errorf("origin %q: want 403, got %v", origin, err)
		}
	}
}
