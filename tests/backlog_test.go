package tests

// Issue #13: a recovery backlog larger than one connection may have queued
// (here 2,000 publications of 2,500 bytes, about 5 MiB, over the 4 MiB
// outbox) is not replayed into a 4009 close and a reconnect loop: the
// recovery is answered recovered:true and a gap frame up to the channel's
// offset, and the client reads the backlog from history page by page
// before it hands on the live messages — both clients by themselves.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	goclient "github.com/switchboard/switchboard/transport/client"
)

const (
	backlogPublications = 2000
	backlogBytes        = 2500
	backlogNamespace    = "doc:history=2100/5m" // room for the live one after the backlog
)

// link is a TCP proxy in front of a broker that can be cut, as a network
// blip would: cut drops every connection through it and refuses new ones
// until heal.
type link struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func startLink(t *testing.T, target string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); l.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go l.carry(in)
		}
	}()
	return l
}

func (l *link) url() string { return "ws://" + l.ln.Addr().String() + "/ws" }

func (l *link) carry(in net.Conn) {
	out, err := net.Dial("tcp", l.target)
	if err != nil {
		in.Close()
		return
	}
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	l.conns[in], l.conns[out] = true, true
	l.mu.Unlock()
	go func() { _, _ = io.Copy(out, in); out.Close() }()
	_, _ = io.Copy(in, out)
	in.Close()
}

func (l *link) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		c.Close()
	}
	clear(l.conns)
}

func (l *link) heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = false
}

// publishBacklog publishes n publications of size bytes to channel,
// pipelined, and returns their data by offset.
func publishBacklog(t *testing.T, srv *server, channel string, n, size int) map[int64]string {
	t.Helper()
	writer := join(t, srv, "backlog-writer")
	ids := make([]string, n)
	data := make([]string, n)
	for i := range n {
		data[i] = payload(fmt.Sprintf("m%04d-", i+1), size)
		ids[i] = writer.publishAsync(t, channel, data[i])
	}
	byOffset := map[int64]string{}
	for i, id := range ids {
		f, ok := writer.reply(id, 30*time.Second)
		if !ok || f.typ() != "published" {
			t.Fatalf("backlog publication %d: %v (%s)", i, f, writer.state())
		}
		byOffset[f.offset()] = data[i]
	}
	return byOffset
}

// checkBacklog compares what a reader got, in order, with the backlog.
func checkBacklog(t *testing.T, who string, offsets []int64, data []string, want map[int64]string, after int64) {
	t.Helper()
	if len(offsets) != len(want) {
		t.Errorf("%s read %d publications, want %d", who, len(offsets), len(want))
	}
	for i, o := range offsets {
		if o != after+int64(i)+1 {
			t.Fatalf("%s: publication %d has offset %d, want %d (a gap, a duplicate or a reorder)", who, i, o, after+int64(i)+1)
		}
		if data[i] != want[o] {
			t.Fatalf("%s: offset %d holds %.12q…, want %.12q…", who, o, data[i], want[o])
		}
	}
}

// A raw client recovering from before a 5 MiB backlog is answered
// recovered:true and, right after, a gap frame in the same epoch up to the
// channel's offset, with nothing replayed; it reads every publication,
// once and in order, from history pages of at most 1 MiB, on a connection
// that stays open, and the live messages then follow the gap's offset.
func TestBigRecoveryBacklogIsPagedFromHistory(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--namespaces", backlogNamespace)
	first := srv.connect(t, "reader")
	sub := first.subscribe("doc:big")
	epoch, since := sub["epoch"], int64(sub["offset"].(float64))
	first.send(`{"type":"disconnect"}`)
	first.expectClose()
	want := publishBacklog(t, srv, "doc:big", backlogPublications, backlogBytes)
	offset := since + backlogPublications

	back := join(t, srv, "reader")
	reply := back.call(t, map[string]any{"type": "subscribe", "channel": "doc:big",
		"recover": map[string]any{"offset": since, "epoch": epoch}}, waitTimeout)
	if reply.typ() != "subscribed" || reply.m["recovered"] != true || reply.offset() != offset || reply.epoch() != epoch {
		t.Fatalf("recovering over a %d-byte backlog: %v, want recovered:true at offset %d", backlogPublications*backlogBytes, reply, offset)
	}
	eventually(t, waitTimeout, "the gap frame", func() bool { return len(back.frames("gap", "doc:big")) > 0 })
	if got := back.frames("", "doc:big"); len(got) < 2 || got[0].typ() != "subscribed" || got[1].typ() != "gap" {
		t.Fatalf("frames of doc:big %v: want the subscribed reply, then the gap", got)
	}
	if gap := back.frames("gap", "doc:big"); len(gap) != 1 || gap[0].epoch() != epoch || gap[0].offset() != offset {
		t.Fatalf("gap frames %v: want one, in epoch %v up to offset %d", gap, epoch, offset)
	}
	var offsets []int64
	var data []string
	pages := 0
	for cursor := since; ; pages++ {
		id, err := back.ask(map[string]any{"type": "history", "channel": "doc:big", "since": cursor})
		if err != nil {
			t.Fatal(err)
		}
		page, ok := back.reply(id, waitTimeout)
		if !ok || page.typ() != "history" {
			t.Fatalf("history since %d: %v (%s)", cursor, page, back.state())
		}
		pubs, _ := page.m["publications"].([]any)
		raw, _ := json.Marshal(pubs)
		if len(pubs) == 0 || len(raw) > 1<<20+64<<10 {
			t.Fatalf("history page since %d: %d publications in %d bytes", cursor, len(pubs), len(raw))
		}
		for _, p := range pubs {
			m := p.(map[string]any)
			offsets = append(offsets, int64(m["offset"].(float64)))
			data = append(data, fmt.Sprint(m["data"]))
		}
		cursor = offsets[len(offsets)-1]
		if page.m["more"] != true {
			break
		}
	}
	checkBacklog(t, "the raw client", offsets, data, want, since)
	if got := back.frames("message", "doc:big"); len(got) != 0 {
		t.Errorf("%d publications were replayed although the backlog was sent to history", len(got))
	}
	writer := join(t, srv, "live-writer")
	writer.mustPublish(t, "doc:big", "live")
	eventually(t, waitTimeout, "the live publication", func() bool { return len(back.messages("doc:big")) > 0 })
	if live := back.messages("doc:big"); len(live) != 1 || live[0].data() != "live" || live[0].offset() != offset+1 || live[0].epoch() != epoch {
		t.Errorf("live messages %v: want only the live one, at offset %d", live, offset+1)
	}
	back.call(t, map[string]any{"type": "ping"}, waitTimeout) // still open
	if closes := srv.metric(t, "switchboard_slow_consumer_closes_total"); closes != 0 {
		t.Errorf("%v slow-consumer closes (4009)", closes)
	}
	t.Logf("%d publications read in %d pages", len(offsets), pages+1)
}

// The Go client away for a 5 MiB backlog: its re-subscription is answered
// recovered:true and a gap frame, so it reads the backlog from history by
// itself and hands on every missed publication, once and in order, then
// the live one published while it was catching up (held back until then)
// — with no recovery_failed, no 4009 and no reconnect loop.
func TestGoClientAfterABigBacklog(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--namespaces", backlogNamespace)
	wire := startLink(t, srv.addr)
	rec := newRecorder()
	c := dialGoClient(t, wire.url(), "reader", rec)
	sub, err := c.Subscribe(context.Background(), "doc:big", goclient.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wire.cut()
	rec.waitFor(t, "the disconnection", func() bool { return rec.saw("disconnected") })
	want := publishBacklog(t, srv, "doc:big", backlogPublications, backlogBytes)
	wire.heal()
	// The live one goes out once the client has re-subscribed and started
	// on the backlog: most likely while it is still reading history.
	rec.waitFor(t, "the first missed publication", func() bool { return len(rec.messages) > 0 || rec.saw("recovery_failed") })
	writer := join(t, srv, "live-writer")
	writer.mustPublish(t, "doc:big", "live")
	rec.mu.Lock()
	t.Logf("%d missed publications handed on when the live one was published", len(rec.messages))
	rec.mu.Unlock()
	rec.waitFor(t, "the live publication", func() bool { // cheap: it runs for every message handed on
		n := len(rec.messages)
		return (n > 0 && string(rec.messages[n-1].Data) == `"live"`) || rec.saw("recovery_failed")
	})

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.saw("recovery_failed") {
		t.Fatalf("events %v: recovery_failed, although history held the whole backlog", rec.eventTypes())
	}
	var offsets []int64
	var data []string
	for _, m := range rec.messages {
		var s string
		_ = json.Unmarshal(m.Data, &s)
		if m.Channel != "doc:big" || m.Epoch != sub.Epoch {
			t.Fatalf("the client handed on %s at %s/%d, want doc:big in epoch %s", m.Channel, m.Epoch, m.Offset, sub.Epoch)
		}
		offsets, data = append(offsets, int64(m.Offset)), append(data, s)
	}
	if len(offsets) != backlogPublications+1 {
		t.Fatalf("the client handed on %d messages, want the %d missed ones and the live one", len(offsets), backlogPublications)
	}
	checkBacklog(t, "the Go client", offsets[:backlogPublications], data[:backlogPublications], want, int64(sub.Offset))
	if live := offsets[backlogPublications]; live != int64(sub.Offset)+backlogPublications+1 || data[backlogPublications] != "live" {
		t.Errorf("the last message: %.12q at offset %d, want the live one at %d", data[backlogPublications], live, int64(sub.Offset)+backlogPublications+1)
	}
	if after := eventsAfterReconnecting(rec.eventTypes()); len(after) != 1 {
		t.Errorf("events %v: want one reconnection and no disconnection after it", rec.eventTypes())
	}
	if closes := srv.metric(t, "switchboard_slow_consumer_closes_total"); closes != 0 {
		t.Errorf("%v slow-consumer closes (4009)", closes)
	}
}

// The same for the JS client under Node.js: it reads the backlog from
// history by itself and hands on all of it, then the live one.
func TestJSClientAfterABigBacklog(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--rate-limit", "0", "--namespaces", backlogNamespace)
	wire := startLink(t, srv.addr)
	js := startJSClient(t, wire.url(), "reader", "doc:big")
	wire.cut()
	waitJS(t, js, "the disconnection", func() bool { return len(js.of("disconnected")) > 0 })
	want := publishBacklog(t, srv, "doc:big", backlogPublications, backlogBytes)
	wire.heal()
	waitJS(t, js, "the first missed publication", func() bool {
		return len(js.of("message")) > 0 || len(js.of("recovery_failed")) > 0
	})
	writer := join(t, srv, "live-writer")
	writer.mustPublish(t, "doc:big", "live")
	t.Logf("%d missed publications handed on when the live one was published", len(js.of("message")))
	waitJS(t, js, "the live publication", func() bool {
		m := jsMessages(js)["doc:big"]
		return (len(m) > 0 && m[len(m)-1] == "live") || len(js.of("recovery_failed")) > 0
	})

	if f := js.of("recovery_failed"); len(f) > 0 {
		t.Fatalf("recovery_failed %v, although history held the whole backlog", f[0].Payload)
	}
	var offsets []int64
	var data []string
	for _, e := range js.of("message") {
		offsets, data = append(offsets, int64(e.Payload["offset"].(float64))), append(data, fmt.Sprint(e.Payload["data"]))
	}
	if len(offsets) != backlogPublications+1 {
		t.Fatalf("the client handed on %d messages, want the %d missed ones and the live one", len(offsets), backlogPublications)
	}
	checkBacklog(t, "the JS client", offsets[:backlogPublications], data[:backlogPublications], want, 0)
	if live := offsets[backlogPublications]; live != backlogPublications+1 || data[backlogPublications] != "live" {
		t.Errorf("the last message: %.12q at offset %d, want the live one at %d", data[backlogPublications], live, backlogPublications+1)
	}

	var lifecycle []string
	for _, e := range js.all() {
		lifecycle = append(lifecycle, e.Event)
	}
	if after := eventsAfterReconnecting(lifecycle[1:]); len(after) != 1 { // the first: connecting at the start
		t.Errorf("events %v: want one reconnection and no disconnection after it", lifecycle)
	}
	if closes := srv.metric(t, "switchboard_slow_consumer_closes_total"); closes != 0 {
		t.Errorf("%v slow-consumer closes (4009)", closes)
	}
}

// eventsAfterReconnecting returns the connected and disconnected events
// from the first connected on: a client that reconnected once and stayed
// has exactly one.
func eventsAfterReconnecting(events []string) []string {
	var out []string
	for _, e := range events {
		if e == "connected" || (len(out) > 0 && e == "disconnected") {
			out = append(out, e)
		}
	}
	return out
}
