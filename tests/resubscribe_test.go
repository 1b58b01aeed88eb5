package tests

// Issue #13: with the default rate limits, the project's own clients
// re-subscribe a hundred channels after the broker restarts and receive on
// every one of them — the Go client, the JS client under Node.js and in
// Chromium — and, when the channels' history outlived the restart, recover
// what they missed without a recovery_failed.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard/switchboard/cluster"
	goclient "github.com/switchboard/switchboard/transport/client"
)

const manyChannels = 100

// defaultRates undoes startNode's --rate-limit 0: the broker's own
// defaults, which these tests are about.
var defaultRates = []string{"--rate-limit", "100", "--rate-burst", "300"}

// recoveringPair is two cluster nodes keeping doc:* history, one of them
// on addresses it can be restarted on: the restarted node's clients find
// their channels' history on the other while it is away.
type recoveringPair struct {
	etcd        *cluster.EmbeddedEtcd
	restartable *server
	nodeAddr    string
	steady      *server
	args        []string
}

func startRecoveringPair(t *testing.T) *recoveringPair {
	t.Helper()
	p := &recoveringPair{etcd: startEtcd(t), args: append([]string{"--namespaces", "doc:history=100/5m"}, defaultRates...)}
	p.restartable, p.nodeAddr = startPinnedNode(t, p.etcd, p.args...)
	p.steady = startNode(t, p.etcd, p.args...)
	waitForMembers(t, []*server{p.restartable, p.steady}, 2)
	return p
}

func (p *recoveringPair) restart(t *testing.T) {
	t.Helper()
	p.restartable = restartInPlace(t, p.etcd, p.restartable, p.nodeAddr, p.args...)
	waitForMembers(t, []*server{p.restartable, p.steady}, 2)
}

// publishEach publishes "<tag> <channel>" to every channel through p,
// retrying while a channel is moving between nodes.
func publishEach(t *testing.T, p *peer, channels []string, tag string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, ch := range channels {
		p.publishBy(t, ch, tag+" "+ch, deadline)
	}
}

// goMessages returns, per channel, the data the Go client handed on, in order.
func goMessages(rec *recorder) map[string][]string {
	out := map[string][]string{}
	for _, m := range rec.messages {
		var s string
		_ = json.Unmarshal(m.Data, &s)
		out[m.Channel] = append(out[m.Channel], s)
	}
	return out
}

// goEventFrames returns the frames of the Go client's events of typ.
func goEventFrames(rec *recorder, typ string) []map[string]any {
	var out []map[string]any
	for _, e := range rec.events {
		if e.Type == typ {
			var m map[string]any
			_ = json.Unmarshal(e.Frame, &m)
			out = append(out, m)
		}
	}
	return out
}

// everyChannelGot reports whether each channel's messages include tag's.
func everyChannelGot(got map[string][]string, channels []string, tag string) bool {
	for _, ch := range channels {
		found := false
		for _, d := range got[ch] {
			found = found || d == tag+" "+ch
		}
		if !found {
			return false
		}
	}
	return true
}

func dialGoClient(t *testing.T, url, user string, rec *recorder) *goclient.Client {
	t.Helper()
	c, err := goclient.Dial(context.Background(), goclient.Options{URL: url, User: user,
		BackoffBase: 50 * time.Millisecond, BackoffCap: 400 * time.Millisecond,
		OnMessage: rec.onMessage, OnEvent: rec.onEvent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// subscribeAll subscribes c to every channel at once, as an application
// opening a hundred views does.
func subscribeAll(t *testing.T, c *goclient.Client, channels []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(channels))
	for _, ch := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Subscribe(context.Background(), ch, goclient.SubscribeOptions{}); err != nil {
				errs <- fmt.Errorf("subscribe %s: %w", ch, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkNoGivingUp fails the test if a client dropped a channel the server
// refused: with the default limits no refusal should be final.
// checkEveryRecoveryFailed checks that a client reported recovery_failed
// for each of the manyChannels channels whose history a restart lost.
func checkEveryRecoveryFailed(t *testing.T, events []map[string]any) {
	t.Helper()
	failed := map[string]bool{}
	for _, e := range events {
		failed[fmt.Sprint(e["channel"])] = true
	}
	if len(failed) != manyChannels {
		t.Errorf("recovery_failed for %d of %d channels whose history the restart lost", len(failed), manyChannels)
	}
}

func checkNoGivingUp(t *testing.T, refusals []map[string]any) {
	t.Helper()
	for _, r := range refusals {
		if r["retrying"] != true {
			t.Errorf("a re-subscription was refused for good: %v", r)
		}
	}
	if len(refusals) > 0 {
		t.Logf("%d re-subscriptions were refused and retried: %v", len(refusals), refusals[0])
	}
}

// The broker restarts and loses its channels: the Go client subscribes
// all 100 again (each says recovery_failed, for their history is gone) and
// receives on every one.
func TestGoClientResubscribesHundredChannelsAfterRestart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	srv := startServer(t, "--addr", addr)
	rec := newRecorder()
	c := dialGoClient(t, "ws://"+addr+"/ws", "hundred", rec)
	channels := names("many", manyChannels)
	subscribeAll(t, c, channels)

	srv.stop()
	rec.waitFor(t, "the disconnection", func() bool { return rec.saw("disconnected") })
	srv = startServer(t, "--addr", addr)
	eventually(t, 20*time.Second, "100 re-subscriptions", func() bool {
		return srv.metric(t, "switchboard_subscriptions") == manyChannels
	})
	publishEach(t, join(t, srv, "publisher"), channels, "after")
	rec.waitFor(t, "a message on every channel", func() bool { return everyChannelGot(goMessages(rec), channels, "after") })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	checkEveryRecoveryFailed(t, goEventFrames(rec, "recovery_failed"))
	checkNoGivingUp(t, goEventFrames(rec, "subscription_failed"))
}

// The node the Go client is connected to restarts while the other keeps
// the channels' history: the client re-subscribes all 100, recovers the
// publication it missed on each, with no recovery_failed, and receives
// live ones after it.
func TestGoClientRecoversHundredChannelsAfterRestart(t *testing.T) {
	t.Parallel()
	pair := startRecoveringPair(t)
	rec := newRecorder()
	c := dialGoClient(t, pair.restartable.wsURL(""), "hundred", rec)
	channels := names("doc", manyChannels)
	subscribeAll(t, c, channels)
	publisher := join(t, pair.steady, "publisher")
	publishEach(t, publisher, channels, "before")
	rec.waitFor(t, "the first message on every channel", func() bool { return everyChannelGot(goMessages(rec), channels, "before") })

	pair.restartable.stop()
	rec.waitFor(t, "the disconnection", func() bool { return rec.saw("disconnected") })
	publishEach(t, publisher, channels, "missed")
	pair.restart(t)
	rec.waitFor(t, "the missed message on every channel", func() bool { return everyChannelGot(goMessages(rec), channels, "missed") })
	publishEach(t, publisher, channels, "after")
	rec.waitFor(t, "a live message on every channel", func() bool { return everyChannelGot(goMessages(rec), channels, "after") })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if failed := goEventFrames(rec, "recovery_failed"); len(failed) > 0 {
		t.Errorf("%d recovery_failed events although history held what was missed, e.g. %v", len(failed), failed[0])
	}
	got := goMessages(rec)
	for _, ch := range channels {
		if want := []string{"before " + ch, "missed " + ch, "after " + ch}; strings.Join(got[ch], "|") != strings.Join(want, "|") {
			t.Errorf("%s: the client handed on %q, want %q", ch, got[ch], want)
		}
	}
	checkNoGivingUp(t, goEventFrames(rec, "subscription_failed"))
}

// jsMessages returns, per channel, the data the JS client handed on, in order.
func jsMessages(js *jsClient) map[string][]string {
	out := map[string][]string{}
	for _, e := range js.of("message") {
		ch := fmt.Sprint(e.Payload["channel"])
		out[ch] = append(out[ch], fmt.Sprint(e.Payload["data"]))
	}
	return out
}

func jsPayloads(js *jsClient, event string) []map[string]any {
	var out []map[string]any
	for _, e := range js.of(event) {
		out = append(out, e.Payload)
	}
	return out
}

func waitJS(t *testing.T, js *jsClient, what string, cond func() bool) {
	t.Helper()
	if !within(30*time.Second, cond) {
		t.Fatalf("the js client: timed out waiting for %s", what)
	}
}

// The same for the JS client under Node.js: the broker restarts without
// history; all 100 channels are subscribed again and receive.
func TestJSClientResubscribesHundredChannelsAfterRestart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	srv := startServer(t, "--addr", addr)
	channels := names("many", manyChannels)
	js := startJSClient(t, "ws://"+addr+"/ws", "hundred", channels...)

	srv.stop()
	waitJS(t, js, "the disconnection", func() bool { return len(js.of("disconnected")) > 0 })
	srv = startServer(t, "--addr", addr)
	eventually(t, 30*time.Second, "100 re-subscriptions", func() bool {
		return srv.metric(t, "switchboard_subscriptions") == manyChannels
	})
	publishEach(t, join(t, srv, "publisher"), channels, "after")
	waitJS(t, js, "a message on every channel", func() bool { return everyChannelGot(jsMessages(js), channels, "after") })

	checkEveryRecoveryFailed(t, jsPayloads(js, "recovery_failed"))
	checkNoGivingUp(t, jsPayloads(js, "subscription_failed"))
}

// The JS client under Node.js on a node that restarts while the other
// keeps the history: every channel recovers what it missed.
func TestJSClientRecoversHundredChannelsAfterRestart(t *testing.T) {
	t.Parallel()
	pair := startRecoveringPair(t)
	channels := names("doc", manyChannels)
	js := startJSClient(t, pair.restartable.wsURL(""), "hundred", channels...)
	publisher := join(t, pair.steady, "publisher")
	publishEach(t, publisher, channels, "before")
	waitJS(t, js, "the first message on every channel", func() bool { return everyChannelGot(jsMessages(js), channels, "before") })

	pair.restartable.stop()
	waitJS(t, js, "the disconnection", func() bool { return len(js.of("disconnected")) > 0 })
	publishEach(t, publisher, channels, "missed")
	pair.restart(t)
	waitJS(t, js, "the missed message on every channel", func() bool { return everyChannelGot(jsMessages(js), channels, "missed") })
	publishEach(t, publisher, channels, "after")
	waitJS(t, js, "a live message on every channel", func() bool { return everyChannelGot(jsMessages(js), channels, "after") })

	if failed := jsPayloads(js, "recovery_failed"); len(failed) > 0 {
		t.Errorf("%d recovery_failed events although history held what was missed, e.g. %v", len(failed), failed[0])
	}
	got := jsMessages(js)
	for _, ch := range channels {
		if want := []string{"before " + ch, "missed " + ch, "after " + ch}; strings.Join(got[ch], "|") != strings.Join(want, "|") {
			t.Errorf("%s: the client handed on %q, want %q", ch, got[ch], want)
		}
	}
	checkNoGivingUp(t, jsPayloads(js, "subscription_failed"))
}

// hundredChannelsPage is what a page with 100 open channels does: it
// loads the served client, subscribes to all of them at once and keeps
// what the client hands it in window.sb*.
const hundredChannelsPage = `(async () => {
  const { Switchboard } = await import("/switchboard.js");
  const sb = new Switchboard(%q, { user: "page", backoffBase: 100, backoffCap: 500 });
  window.sbGot = {};
  window.sbFailed = {};
  window.sbRefused = [];
  window.sbCloses = [];
  sb.on("message", (m) => (window.sbGot[m.channel] ??= []).push(m.data));
  sb.on("recovery_failed", (e) => (window.sbFailed[e.channel] = true));
  sb.on("subscription_failed", (e) => window.sbRefused.push(e));
  sb.on("disconnected", (e) => window.sbCloses.push(e.code));
  await sb.connect();
  await Promise.all(%s.map((channel) => sb.subscribe(channel)));
  return true;
})()`

// In Chromium: a page subscribed to 100 channels, the broker restarts, and
// the page receives on all of them again.
func TestBrowserResubscribesHundredChannelsAfterRestart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	srv := startServer(t, "--addr", addr)
	b := browser(t)
	page := tab(t, b, "http://"+addr+"/healthz")
	channels := names("many", manyChannels)
	list, _ := json.Marshal(channels)
	if _, err := chromedp.Run(page, chromedp.Evaluate[bool](fmt.Sprintf(hundredChannelsPage, "ws://"+addr+"/ws", list), chromedp.EvalAwaitPromise)); err != nil {
		t.Fatalf("the page subscribing: %v", err)
	}

	srv.stop()
	waitUntil(t, page, "the disconnection", `window.sbCloses.length > 0`)
	srv = startServer(t, "--addr", addr)
	eventually(t, 30*time.Second, "100 re-subscriptions", func() bool {
		return srv.metric(t, "switchboard_subscriptions") == manyChannels
	})
	publishEach(t, join(t, srv, "publisher"), channels, "after")
	waitUntil(t, page, "a message on every channel",
		fmt.Sprintf(`%s.every((ch) => (window.sbGot[ch] ?? []).includes("after " + ch))`, list))

	failed, err := chromedp.Run(page, chromedp.Evaluate[int](`Object.keys(window.sbFailed).length`))
	if err != nil {
		t.Fatal(err)
	}
	if failed != manyChannels {
		t.Errorf("recovery_failed for %d of %d channels whose history the restart lost", failed, manyChannels)
	}
	refused, err := chromedp.Run(page, chromedp.Evaluate[[]map[string]any](`window.sbRefused`))
	if err != nil {
		t.Fatal(err)
	}
	checkNoGivingUp(t, refused)
}
