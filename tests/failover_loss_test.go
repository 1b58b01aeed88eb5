package tests

// When a channel's state is lost — its owner and the replica on the member
// ranked next die together, or channels keep no replica — the channel
// starts a new epoch, and nothing may pass for a continuation of the old
// one: subscribers that stay connected get a gap frame naming the new
// epoch, a client recovering from the old epoch is answered
// recovered:false, and the client libraries emit recovery_failed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard/switchboard/cluster"
	goclient "github.com/switchboard/switchboard/transport/client"
)

// lossArgs keep history, so that a lost epoch is history lost.
var lossArgs = []string{"--channel-replicas", "1", "--history-size", "1000", "--history-ttl", "5m"}

// startPinnedCluster starts n nodes on cluster addresses chosen here, so a
// test knows each member's address (and where a channel's replica lives),
// and waits until every one sees all n.
func startPinnedCluster(t testing.TB, etcd *cluster.EmbeddedEtcd, n int, args ...string) ([]*server, []string) {
	t.Helper()
	nodes, addrs := make([]*server, n), make([]string, n)
	for i := range nodes {
		nodes[i], addrs[i] = startPinnedNode(t, etcd, args...)
	}
	waitForMembers(t, nodes, n)
	return nodes, addrs
}

// replicaOf is the node that keeps the replica of channel owned by
// nodes[owner]: the member the broker's placement ranks next.
func replicaOf(channel string, owner int, nodeAddrs []string) int {
	for _, address := range cluster.NewPlacement(nodeAddrs).Ranked(channel) {
		if i := slices.Index(nodeAddrs, address); i != owner {
			return i
		}
	}
	return -1
}

// channelPlacedOn is the first of prefix0, prefix1, … that the broker's
// placement gives to nodes[owner], with its replica on nodes[replica].
func channelPlacedOn(t testing.TB, prefix string, owner, replica int, nodeAddrs []string) string {
	t.Helper()
	for i := range 1000 {
		channel := fmt.Sprintf("%s%d", prefix, i)
		ranked := cluster.NewPlacement(nodeAddrs).Ranked(channel)
		if ranked[0] == nodeAddrs[owner] && replicaOf(channel, owner, nodeAddrs) == replica {
			return channel
		}
	}
	t.Fatalf("none of the first 1000 channels %s* is owned by node %d with its replica on node %d", prefix, owner, replica)
	return ""
}

// channelsByFate probes prefix0, prefix1, … on a 3-node cluster and sorts
// them by what killing nodes 1 and 2 together does to them: lost (owner
// and replica both among them) or kept (owned by one of them, replica on
// node 0). Channels node 0 owns are passed over. Each probed channel has
// one publication, "probe".
func channelsByFate(t testing.TB, nodes []*server, nodeAddrs []string, p *peer, prefix string, nLost, nKept int) (lost, kept []string) {
	t.Helper()
	for i := 0; len(lost) < nLost || len(kept) < nKept; i++ {
		if i == 100 {
			t.Fatalf("among the first 100 channels %s*, %d lost and %d kept when nodes 1 and 2 die", prefix, len(lost), len(kept))
		}
		channel := fmt.Sprintf("%s%d", prefix, i)
		owner := ownerOf(t, nodes, p, channel)
		if owner == 0 {
			continue
		}
		if replicaOf(channel, owner, nodeAddrs) == 0 {
			if len(kept) < nKept {
				kept = append(kept, channel)
			}
		} else if len(lost) < nLost {
			lost = append(lost, channel)
		}
	}
	return lost, kept
}

// publishAll publishes data to each channel through p, retrying while the
// channel is unavailable (its owner is being replaced), for up to 20s.
func publishAll(t testing.TB, p *peer, channels []string, data string) map[string]int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	offsets := map[string]int64{}
	for _, ch := range channels {
		offsets[ch], _ = p.publishBy(t, ch, data, deadline)
	}
	return offsets
}

// waitForData waits until w has received data on every channel and
// returns the message frames carrying it.
func waitForData(t testing.TB, w *peer, channels []string, data string) map[string]frame {
	t.Helper()
	out := map[string]frame{}
	if !within(waitTimeout, func() bool {
		for _, ch := range channels {
			f, ok := w.find(ch, data)
			if !ok {
				return false
			}
			out[ch] = f
		}
		return true
	}) {
		t.Fatalf("%s on %s: %q did not arrive on every channel of %v within %s", w.user, w.node.addr, data, channels, waitTimeout)
	}
	return out
}

// checkToldOfNewEpoch checks what w received on channel since its message
// before (in epoch old): a gap naming a new epoch, then the message after
// following the gap's offset in that epoch, and nothing else.
func checkToldOfNewEpoch(w *peer, channel string, before frame, afterData string, probs *problems) (gap frame) {
	var since []frame
	seen := false
	for _, f := range w.frames("", channel) {
		if seen && (f.typ() == "gap" || f.typ() == "message") {
			since = append(since, f)
		}
		if f.typ() == "message" && f.data() == before.data() {
			seen = true
		}
	}
	if len(since) != 2 || since[0].typ() != "gap" || since[1].typ() != "message" || since[1].data() != afterData {
		probs.add("not exactly a gap, then the next message, after the state was lost",
			"%s on %s, %s: after %s got %v", w.user, w.node.addr, channel, before, since)
		return frame{}
	}
	gap, after := since[0], since[1]
	if gap.epoch() == before.epoch() || gap.epoch() == "" {
		probs.add("gap frame does not name a new epoch", "%s, %s: old epoch %s, gap %s", w.user, channel, before.epoch(), gap)
	}
	if after.epoch() != gap.epoch() || after.offset() != gap.offset()+1 {
		probs.add("next message does not follow the gap", "%s, %s: gap %s, then %s", w.user, channel, gap, after)
	}
	return gap
}

// checkContinued checks that w received after right after before, in the
// same epoch and with no gap frame between.
func checkContinued(w *peer, channel string, before frame, afterData string, probs *problems) {
	for _, g := range w.frames("gap", channel) {
		probs.add("gap frame although the replica survived", "%s on %s, %s: %s", w.user, w.node.addr, channel, g)
	}
	after, ok := w.find(channel, afterData)
	if !ok || after.epoch() != before.epoch() || after.offset() != before.offset()+1 {
		probs.add("epoch not continued although the replica survived", "%s, %s: %s then %s", w.user, channel, before, after)
	}
}

// The owner of some channels and their replica die together: those
// channels start a new epoch. A subscriber on the survivor is told with a
// gap frame before the channel's next message, and a client recovering
// from the old epoch is answered recovered:false. Channels whose replica
// was on the survivor go on in their epoch, and recover.
func TestFailoverLosingOwnerAndReplicaStartsANewEpoch(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes, nodeAddrs := startPinnedCluster(t, etcd, 3, lossArgs...)
	prober := join(t, nodes[0], "prober")
	lost, kept := channelsByFate(t, nodes, nodeAddrs, prober, "fate", 3, 2)
	all := append(append([]string{}, lost...), kept...)

	watcher := join(t, nodes[0], "watcher")
	watcher.subscribe(t, nil, all...)
	publishAll(t, prober, all, "before")
	before := waitForData(t, watcher, all, "before")

	nodes[1].kill()
	nodes[2].kill()
	// Publications sent to the dead owner before the survivor sees it leave
	// may be answered outcome_unknown; that window is not under test here.
	waitForMembers(t, nodes[:1], 1)
	publishAll(t, prober, all, "after")
	waitForData(t, watcher, all, "after")

	var probs problems
	newEpochs := map[string]string{}
	for _, ch := range lost {
		newEpochs[ch] = checkToldOfNewEpoch(watcher, ch, before[ch], "after", &probs).epoch()
	}
	for _, ch := range kept {
		checkContinued(watcher, ch, before[ch], "after", &probs)
	}

	// A client that saw "before" reconnects to the survivor and recovers.
	back := join(t, nodes[0], "back")
	for _, ch := range all {
		from := before[ch]
		sub := back.subscribe(t, map[string]any{"recover": map[string]any{"offset": from.offset(), "epoch": from.epoch()}}, ch)[ch]
		if epoch, wasLost := newEpochs[ch]; wasLost {
			if sub.m["recovered"] != false || sub.epoch() == from.epoch() || (epoch != "" && sub.epoch() != epoch) {
				probs.add("recovery from a lost epoch not refused", "%s from %d of %s: %s (the new epoch is %s)", ch, from.offset(), from.epoch(), sub, epoch)
			}
			continue
		}
		if sub.m["recovered"] != true || sub.epoch() != from.epoch() {
			probs.add("recovery from a kept epoch refused", "%s from %d of %s: %s", ch, from.offset(), from.epoch(), sub)
		}
	}
	if within(waitTimeout, func() bool { return len(back.messages("")) >= len(kept) }) {
		for _, m := range back.messages("") {
			if _, wasLost := newEpochs[m.channel()]; wasLost || m.data() != "after" {
				probs.add("recovered something other than the kept channels' missed message", "%s", m)
			}
		}
	} else {
		probs.add("kept channels' missed messages not replayed", "got %v", back.messages(""))
	}
	t.Logf("lost %v (new epochs %v), kept %v", lost, newEpochs, kept)
	probs.report(t)
}

// Without replicas the owner's death alone loses a channel's state: every
// subscriber on the survivors is told of the new epoch with a gap frame,
// and recovery from the old one is refused.
func TestFailoverWithoutReplicasStartsANewEpoch(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3, "--channel-replicas", "0", "--history-size", "1000", "--history-ttl", "5m")
	prober := join(t, nodes[0], "prober")
	channels := channelsOwnedBy(t, nodes, prober, "bare", 2, 3)

	watchers := []*peer{join(t, nodes[0], "watcher0"), join(t, nodes[1], "watcher1")}
	before := map[*peer]map[string]frame{}
	for _, w := range watchers {
		w.subscribe(t, nil, channels...)
	}
	publishAll(t, prober, channels, "before")
	for _, w := range watchers {
		before[w] = waitForData(t, w, channels, "before")
	}

	nodes[2].kill()
	waitForMembers(t, nodes[:2], 2)
	publishAll(t, prober, channels, "after")
	var probs problems
	for _, w := range watchers {
		waitForData(t, w, channels, "after")
		for _, ch := range channels {
			checkToldOfNewEpoch(w, ch, before[w][ch], "after", &probs)
		}
	}
	back := join(t, nodes[1], "back")
	for _, ch := range channels {
		from := before[watchers[0]][ch]
		sub := back.subscribe(t, map[string]any{"recover": map[string]any{"offset": from.offset(), "epoch": from.epoch()}}, ch)[ch]
		if sub.m["recovered"] != false || sub.epoch() == from.epoch() {
			probs.add("recovery from a lost epoch not refused", "%s from %d of %s: %s", ch, from.offset(), from.epoch(), sub)
		}
	}
	probs.report(t)
}

// goEvents keeps what a Go client hands the application, messages and
// events in one order.
type goEvents struct {
	mu  sync.Mutex
	log []goclient.Event // messages as Type "message", Frame their JSON
}

func (g *goEvents) onMessage(m goclient.Message) {
	raw, _ := json.Marshal(m)
	g.add(goclient.Event{Type: "message", Frame: raw})
}

func (g *goEvents) onEvent(e goclient.Event) { g.add(e) }

func (g *goEvents) add(e goclient.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.log = append(g.log, e)
}

// of returns the events of typ on channel, decoded, in order.
func (g *goEvents) of(typ, channel string) []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []map[string]any
	for _, e := range g.log {
		if e.Type != typ {
			continue
		}
		m := decode(e.Frame)
		if m["channel"] == channel {
			out = append(out, m)
		}
	}
	return out
}

// sequence lists channel's messages (by data) and recovery_failed events
// in the order the application got them.
func (g *goEvents) sequence(channel string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, e := range g.log {
		m := decode(e.Frame)
		if m["channel"] != channel {
			continue
		}
		switch e.Type {
		case "message":
			out = append(out, fmt.Sprint(m["data"]))
		case "recovery_failed":
			out = append(out, "recovery_failed")
		}
	}
	return out
}

// A Go client connected to the survivor emits recovery_failed, before the
// new epoch's first message, for each channel whose owner and replica died
// together, and for no channel whose replica survived.
func TestGoClientReportsLostChannelState(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes, nodeAddrs := startPinnedCluster(t, etcd, 3, lossArgs...)
	prober := join(t, nodes[0], "prober")
	lost, kept := channelsByFate(t, nodes, nodeAddrs, prober, "gofate", 2, 1)
	all := append(append([]string{}, lost...), kept...)

	ctx := context.Background()
	got := &goEvents{}
	c, err := goclient.Dial(ctx, goclient.Options{URL: nodes[0].wsURL(""), User: "gopher", OnMessage: got.onMessage, OnEvent: got.onEvent})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, ch := range all {
		if _, err := c.Subscribe(ctx, ch, goclient.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Publish(ctx, ch, "before"); err != nil {
			t.Fatal(err)
		}
	}

	nodes[1].kill()
	nodes[2].kill()
	waitForMembers(t, nodes[:1], 1)
	deadline := time.Now().Add(20 * time.Second)
	for _, ch := range all {
		for {
			_, err := c.Publish(ctx, ch, "after")
			var refused *goclient.Error
			if err == nil {
				break
			}
			if !errors.As(err, &refused) || refused.Code != "unavailable" || time.Now().After(deadline) {
				t.Fatalf("publishing to %s after the kill: %v", ch, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !within(waitTimeout, func() bool {
		for _, ch := range all {
			if len(got.of("message", ch)) < 2 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the messages after the kill did not all arrive: %v", got.log)
	}

	var probs problems
	for _, ch := range lost {
		if seq := got.sequence(ch); fmt.Sprint(seq) != "[probe before recovery_failed after]" && fmt.Sprint(seq) != "[before recovery_failed after]" {
			probs.add("recovery_failed not emitted once, before the new epoch's first message", "%s: %v", ch, seq)
		}
		failed, messages := got.of("recovery_failed", ch), got.of("message", ch)
		if len(failed) == 1 && (failed[0]["epoch"] != messages[len(messages)-1]["epoch"] || failed[0]["epoch"] == messages[0]["epoch"]) {
			probs.add("recovery_failed does not name the new epoch", "%s: %v, messages %v", ch, failed[0], messages)
		}
	}
	for _, ch := range kept {
		if seq := got.sequence(ch); fmt.Sprint(seq) != "[before after]" {
			probs.add("a kept channel's stream was not whole", "%s: %v", ch, seq)
		}
	}
	probs.report(t)
}

// compareAndPublish publishes data with expect_offset through p and waits
// for the answer: the offset when published, else the error code (and
// the offset an offset_mismatch names).
func compareAndPublish(p *peer, channel, data string, expect int64) (offset int64, code string) {
	id, err := p.ask(map[string]any{"type": "message", "channel": channel, "data": data, "expect_offset": expect})
	if err != nil {
		return 0, "closed"
	}
	f, ok := p.reply(id, 5*time.Second)
	switch {
	case !ok:
		return 0, "timeout"
	case f.typ() == "published":
		return f.offset(), ""
	default:
		return f.offset(), f.code()
	}
}

// An editor publishes with expect_offset set to the last offset it saw.
// The channel's owner is SIGKILLed; its replica survives. The editor's
// next edit, still expecting the last offset it saw, is published exactly
// once, right after it; the same edit sent again is answered
// offset_mismatch; of two editors that then expect the same offset one
// wins; and every subscriber on the survivors sees each edit once, in
// order, in one epoch.
func TestCompareAndPublishAcrossFailover(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3, lossArgs...)
	prober := join(t, nodes[0], "prober")
	doc := channelsOwnedBy(t, nodes, prober, "doc", 2, 1)[0]

	watchers := []*peer{join(t, nodes[0], "watcher0"), join(t, nodes[1], "watcher1")}
	subscribed := map[*peer]frame{}
	for _, w := range watchers {
		subscribed[w] = w.subscribe(t, nil, doc)[doc]
	}
	editor, rival := join(t, nodes[0], "editor"), join(t, nodes[1], "rival")
	last := subscribed[watchers[0]].offset()
	var edits []string
	for i := 1; i <= 5; i++ {
		data := fmt.Sprintf("edit%d", i)
		offset, code := compareAndPublish(editor, doc, data, last)
		if code != "" || offset != last+1 {
			t.Fatalf("%s expecting %d: offset %d, %q", data, last, offset, code)
		}
		last = offset
		edits = append(edits, data)
	}

	nodes[2].kill()
	// The next edit, sent at once, expecting the last offset the editor saw:
	// unavailable (or outcome_unknown, for an attempt sent to the dead
	// owner) while the channel finds its new owner — retrying is safe, the
	// expected offset guards against a double — then published exactly
	// once. Nothing could have been sequenced by the dead owner.
	var offset int64
	code, attempts := "unavailable", 0
	var answers []string
	for deadline := time.Now().Add(20 * time.Second); (code == "unavailable" || code == "outcome_unknown") && time.Now().Before(deadline); attempts++ {
		if attempts > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		offset, code = compareAndPublish(editor, doc, "edit6", last)
		answers = append(answers, code)
	}
	if code != "" || offset != last+1 {
		t.Fatalf("edit6 expecting %d after the failover: offset %d, %q (answers %q)", last, offset, code, answers)
	}
	edits = append(edits, "edit6")
	if again, code := compareAndPublish(editor, doc, "edit6", last); code != "offset_mismatch" || again != last+1 {
		t.Fatalf("edit6 sent again expecting %d: offset %d, %q; want offset_mismatch at %d", last, again, code, last+1)
	}
	last++

	// Two editors expect the same offset: exactly one wins.
	type answer struct {
		user   string
		offset int64
		code   string
	}
	raced := make(chan answer, 2)
	for _, p := range []*peer{editor, rival} {
		go func() {
			o, c := compareAndPublish(p, doc, "edit7-"+p.user, last)
			raced <- answer{p.user, o, c}
		}()
	}
	race := []answer{<-raced, <-raced}
	winner := ""
	for _, x := range race {
		switch {
		case x.code == "" && x.offset == last+1 && winner == "":
			winner = "edit7-" + x.user
		case x.code == "offset_mismatch" && x.offset == last+1:
		default:
			t.Fatalf("two editors expecting offset %d: %+v", last, race)
		}
	}
	if winner == "" {
		t.Fatalf("neither of two editors expecting offset %d won: %+v", last, race)
	}
	edits = append(edits, winner)

	var probs problems
	for _, w := range watchers {
		if !within(waitTimeout, func() bool { return len(w.messages(doc)) >= len(edits) }) {
			probs.add("edits missing", "%s got %d of %d", w.user, len(w.messages(doc)), len(edits))
		}
		sequence, epochs := w.stream(doc, subscribed[w], &probs)
		var datas []string
		for _, m := range w.messages(doc) {
			datas = append(datas, m.data())
		}
		if fmt.Sprint(datas) != fmt.Sprint(edits) {
			probs.add("edits not seen once each, in order", "%s: %v, want %v", w.user, datas, edits)
		}
		if len(epochs) != 1 {
			probs.add("epoch changed although the replica survived", "%s: %v (%v)", w.user, epochs, sequence)
		}
		if gaps := w.frames("gap", doc); len(gaps) > 0 {
			probs.add("gap frame although the replica survived", "%s: %v", w.user, gaps)
		}
	}
	t.Logf("edit6 published at %d; answers %q", last, answers)
	probs.report(t)
}

// The JavaScript client, run by Node.js on the survivor, emits
// recovery_failed before the new epoch's first message for each channel
// whose owner and replica died together, and for no channel whose replica
// survived.
func TestJSClientReportsLostChannelState(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes, nodeAddrs := startPinnedCluster(t, etcd, 3, lossArgs...)
	prober := join(t, nodes[0], "prober")
	lost, kept := channelsByFate(t, nodes, nodeAddrs, prober, "jsfate", 2, 1)
	all := append(append([]string{}, lost...), kept...)
	js := startJSClient(t, nodes[0].wsURL(""), "node-js", all...)

	arrived := func(data string) bool {
		for _, ch := range all {
			seq := js.sequence(ch)
			if len(seq) == 0 || seq[len(seq)-1] != data {
				return false
			}
		}
		return true
	}
	publishAll(t, prober, all, "before")
	if !within(waitTimeout, func() bool { return arrived("before") }) {
		t.Fatalf("the js client did not receive the first messages: %v", js.all())
	}
	nodes[1].kill()
	nodes[2].kill()
	waitForMembers(t, nodes[:1], 1)
	publishAll(t, prober, all, "after")
	if !within(waitTimeout, func() bool { return arrived("after") }) {
		t.Fatalf("the js client did not receive the messages after the kill: %v", js.all())
	}

	var probs problems
	for _, ch := range lost {
		if seq := js.sequence(ch); fmt.Sprint(seq) != "[before recovery_failed after]" {
			probs.add("recovery_failed not emitted once, before the new epoch's first message", "%s: %v", ch, seq)
		}
		var failed, messages []map[string]any
		for _, e := range js.all() {
			if e.Payload["channel"] == ch && e.Event == "recovery_failed" {
				failed = append(failed, e.Payload)
			}
			if e.Payload["channel"] == ch && e.Event == "message" {
				messages = append(messages, e.Payload)
			}
		}
		if len(failed) == 1 && len(messages) == 2 && (failed[0]["epoch"] != messages[1]["epoch"] || failed[0]["epoch"] == messages[0]["epoch"]) {
			probs.add("recovery_failed does not name the new epoch", "%s: %v, messages %v", ch, failed[0], messages)
		}
	}
	for _, ch := range kept {
		if seq := js.sequence(ch); fmt.Sprint(seq) != "[before after]" {
			probs.add("a kept channel's stream was not whole", "%s: %v", ch, seq)
		}
	}
	probs.report(t)
}
