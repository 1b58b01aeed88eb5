package tests

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
)

// browser starts headless Chromium (Debian's package) for one test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; ./tests/run installs it")
		}
		t.Skip("chromium is not installed (./tests/run installs Debian's package)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 640),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// tab opens url in a new tab of the browser.
func tab(t *testing.T, browserCtx context.Context, url string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return ctx
}

// waitUntil polls a JavaScript condition in the page.
func waitUntil(t *testing.T, page context.Context, what, expression string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expression, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		text, _ := chromedp.Run(page, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, text)
	}
}

// type_ writes text in the chat box and sends it, as a person would.
func type_(t *testing.T, page context.Context, text string) {
	t.Helper()
	if _, err := chromedp.Run(page, chromedp.SendKeys("#text", text)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(page, chromedp.Click("#say button")); err != nil {
		t.Fatal(err)
	}
}

func lobbyURL(addr string, params map[string]string) string {
	q := url.Values{"autojoin": {"1"}}
	for k, v := range params {
		q.Set(k, v)
	}
	return "http://" + addr + "/?" + q.Encode()
}

func logContains(text string) string {
	return fmt.Sprintf(`document.querySelector('#log').innerText.includes(%q)`, text)
}

func TestBrowserTwoPagesChat(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := browser(t)
	alice := tab(t, b, lobbyURL(srv.addr, map[string]string{"name": "alice", "room": "tavern"}))
	waitUntil(t, alice, "alice to join", `document.querySelectorAll('#people li').length === 1`)
	bob := tab(t, b, lobbyURL(srv.addr, map[string]string{"name": "bob", "room": "tavern"}))
	for _, page := range []context.Context{alice, bob} {
		waitUntil(t, page, "both players present", `document.querySelectorAll('#people li').length === 2`)
	}
	waitUntil(t, alice, "bob's arrival", logContains("bob joined"))
	type_(t, alice, "hello bob")
	waitUntil(t, bob, "alice's message", logContains("hello bob"))
	type_(t, bob, "hi alice!")
	waitUntil(t, alice, "bob's reply", logContains("hi alice!"))

	png, err := chromedp.Run(alice, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal("the screenshot is not a PNG")
	}
	// SWITCHBOARD_SCREENSHOT=docs/demo.png refreshes the README's picture.
	if path := os.Getenv("SWITCHBOARD_SCREENSHOT"); path != "" {
		if err := os.WriteFile("../"+path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrowserAuthenticatesWithAToken(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--jwt-secret", secret)
	b := browser(t)
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "carol", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	page := tab(t, b, lobbyURL(srv.addr, map[string]string{"name": "whoever", "room": "vault", "token": tok}))
	waitUntil(t, page, "the token's user", `document.querySelector('#status').innerText === 'connected as carol'`)
	waitUntil(t, page, "presence", `document.querySelector('#people').innerText.includes('carol')`)

	forged := tab(t, b, lobbyURL(srv.addr, map[string]string{"name": "mallory", "room": "vault", "token": tok + "x"}))
	waitUntil(t, forged, "the refusal", `document.querySelector('#status').innerText.includes('Invalid token')`)
}

// The broker under a connected page restarts: the page reconnects,
// re-subscribes and recovers what was published meanwhile. Two nodes, so
// the room's history lives on the node that stays up.
func TestBrowserSurvivesBrokerRestart(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	pageAddr, pageNode := freeAddr(t), freeAddr(t)
	args := []string{"--namespaces", "room:history=100/5m"}
	restartable := startNode(t, etcd, append([]string{"--addr", pageAddr, "--node-addr", pageNode}, args...)...)
	steady := startNode(t, etcd, args...)
	waitForMembers(t, []*server{restartable, steady}, 2)

	// Find a room whose channel lives on the steady node.
	ctx := context.Background()
	publisher := steady.connect(t, "narrator")
	room := ""
	for i := 0; i < 40 && room == ""; i++ {
		before := steady.metric(t, `switchboard_actors{kind="channel"}`)
		// Subscribing activates the room's channel; leaving it again keeps
		// the narrator out of the page's list of people.
		publisher.sendJSON(map[string]any{"type": "subscribe", "channel": fmt.Sprintf("room:r%d", i), "id": i})
		publisher.expect("subscribed")
		publisher.sendJSON(map[string]any{"type": "unsubscribe", "channel": fmt.Sprintf("room:r%d", i), "id": i})
		publisher.expect("unsubscribed")
		if steady.metric(t, `switchboard_actors{kind="channel"}`) > before {
			room = fmt.Sprintf("r%d", i)
		}
	}
	if room == "" {
		t.Fatal("no room placed on the steady node")
	}
	_ = ctx

	b := browser(t)
	page := tab(t, b, lobbyURL(pageAddr, map[string]string{"name": "dana", "room": room, "backoffBase": "200", "backoffCap": "1000"}))
	waitUntil(t, page, "joining", `document.querySelectorAll('#people li').length === 1`)
	say := func(text string) {
		publisher.sendJSON(map[string]any{"type": "message", "channel": "room:" + room, "data": map[string]string{"text": text}, "id": text})
		publisher.expect("published")
	}
	say("before the restart")
	waitUntil(t, page, "the first message", logContains("before the restart"))

	restartable.stop()
	waitUntil(t, page, "the reconnecting notice", `document.querySelector('#status').innerText.startsWith('reconnecting')`)
	say("missed one")
	say("missed two")
	startNode(t, etcd, append([]string{"--addr", pageAddr, "--node-addr", pageNode}, args...)...)
	waitUntil(t, page, "the reconnection", `document.querySelector('#status').innerText.startsWith('connected')`)
	waitUntil(t, page, "the recovered messages", logContains("missed one")+" && "+logContains("missed two"))
	say("after")
	waitUntil(t, page, "live messages again", logContains("after"))
	text, err := chromedp.Run(page, chromedp.Evaluate[string](`document.querySelector('#log').innerText`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, "could not be recovered") || strings.Count(text, "missed one") != 1 {
		t.Fatalf("recovery was not clean:\n%s", text)
	}
}

func TestBrowserReportsReconnectFailed(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := browser(t)
	page := tab(t, b, lobbyURL(srv.addr, map[string]string{"name": "eve", "room": "void", "maxAttempts": "2", "backoffBase": "100", "backoffCap": "200"}))
	waitUntil(t, page, "joining", `document.querySelectorAll('#people li').length === 1`)
	srv.kill()
	waitUntil(t, page, "reconnect_failed", `document.querySelector('#status').innerText.includes('server unreachable')`)
	waitUntil(t, page, "the log line", logContains("gave up reconnecting"))
}

// A page on the surviving node is in a room whose channel's owner and
// replica die together: the page says that messages could not be
// recovered, once, before the room's next message. A page in a room whose
// replica survived says nothing of the kind.
func TestBrowserReportsLostChannelState(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes, nodeAddrs := startPinnedCluster(t, etcd, 3, lossArgs...)
	prober := join(t, nodes[0], "narrator")
	lost, kept := channelsByFate(t, nodes, nodeAddrs, prober, "room:fate", 1, 1)
	b := browser(t)
	pages := map[string]context.Context{}
	for _, channel := range []string{lost[0], kept[0]} {
		room := strings.TrimPrefix(channel, "room:")
		pages[channel] = tab(t, b, lobbyURL(nodes[0].addr, map[string]string{"name": "fay-" + room, "room": room}))
		waitUntil(t, pages[channel], "joining "+room, `document.querySelectorAll('#people li').length === 1`)
	}
	say := func(channel, text string) {
		prober.publishBy(t, channel, map[string]string{"text": text}, time.Now().Add(20*time.Second))
	}
	for channel, page := range pages {
		say(channel, "before the loss")
		waitUntil(t, page, "the first message", logContains("before the loss"))
	}
	nodes[1].kill()
	nodes[2].kill()
	waitForMembers(t, nodes[:1], 1)
	for channel, page := range pages {
		say(channel, "after the loss")
		waitUntil(t, page, "the message after the loss", logContains("after the loss"))
	}
	text := func(channel string) string {
		s, err := chromedp.Run(pages[channel], chromedp.Evaluate[string](`document.querySelector('#log').innerText`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const notice = "some messages could not be recovered"
	lostLog, keptLog := text(lost[0]), text(kept[0])
	if strings.Count(lostLog, notice) != 1 || strings.Index(lostLog, notice) > strings.Index(lostLog, "after the loss") {
		t.Errorf("the page in %s, whose state was lost, did not say so once before the next message:\n%s", lost[0], lostLog)
	}
	if strings.Contains(keptLog, notice) {
		t.Errorf("the page in %s, whose replica survived, reported a loss:\n%s", kept[0], keptLog)
	}
}
