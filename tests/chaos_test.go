package tests

// Chaos: broker processes frozen (SIGSTOP), killed (SIGKILL), stopped and
// restarted, and nodes joining, all while clients publish and subscribe.
// Each test asserts what a user of the broker would notice, and logs the
// figure it measured. Helpers are in chaos_harness_test.go.

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A node frozen past its lease must not come back as half a member: until
// it exits it says it is not ready, it closes its clients with 1012 and
// exits non-zero, and a fresh node started in its place (same addresses,
// as a supervisor would) becomes a full member.
func TestChaosPausedNodeComesBack(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	a, b := startNode(t, etcd), startNode(t, etcd)
	c, cNodeAddr := startPinnedNode(t, etcd)
	waitForMembers(t, []*server{a, b, c}, 3)
	channels := names("frozen", 20)
	alice, bob, carol := join(t, a, "alice"), join(t, b, "bob"), join(t, c, "carol")
	for _, p := range []*peer{alice, bob, carol} {
		p.subscribe(t, nil, channels...)
	}
	for _, ch := range channels {
		carol.mustPublish(t, ch, "before:"+ch)
	}
	for _, p := range []*peer{alice, bob, carol} {
		if !within(waitTimeout, func() bool { return len(p.frames("message", "")) == len(channels) }) {
			t.Fatalf("%s got %d of %d publications before the pause", p.user, len(p.frames("message", "")), len(channels))
		}
	}

	// C freezes for 6 s, three times its lease: the others see it leave.
	pausedAt := time.Now()
	c.pause(t)
	waitForMembers(t, []*server{a, b}, 2)
	time.Sleep(time.Until(pausedAt.Add(6 * time.Second)))
	c.resume(t)
	resumedAt := time.Now()

	// Thawed, it is no member: /readyz must not say 200 before it exits.
	readyz := c.readyzUntilExit(20 * time.Second)
	if readyz["200"] > 0 {
		t.Errorf("/readyz answered 200 %d times after SIGCONT though C's lease had expired (answers: %v)", readyz["200"], readyz)
	}
	if !c.hasExited() {
		t.Fatalf("C did not exit within 20s of SIGCONT though its lease expired while it was frozen (its client: %s; /readyz answers: %v)",
			carol.state(), readyz)
	}
	exitedAfter := time.Since(resumedAt)
	exitCode := c.cmd.ProcessState.ExitCode()
	closeCode, _ := carol.closeCode(time.Second)
	if exitCode == 0 {
		t.Errorf("C exited with code 0 after losing its lease; a supervisor must see a failure")
	}
	if closeCode != 1012 {
		t.Errorf("C's client: %s, want closed with 1012 so it reconnects", carol.state())
	}
	t.Logf("C exited %s after SIGCONT with code %d; its client was closed with %d; /readyz meanwhile: %v",
		exitedAfter.Round(time.Millisecond), exitCode, closeCode, readyz)

	// The supervisor starts a fresh C on the same addresses.
	restartedAt := time.Now()
	deadline := restartedAt.Add(20 * time.Second)
	c2 := restartInPlace(t, etcd, c, cNodeAddr)
	nodes := []*server{a, b, c2}
	waitForMembers(t, nodes, 3)
	membersAfter := time.Since(restartedAt)
	carol2, failures := rejoin(t, c2, "carol", time.Until(deadline)) // to the address it knew
	if carol2 == nil {
		t.Fatalf("carol could not reconnect to %s: %v", c2.addr, failures)
	}
	subscribed := carol2.subscribe(t, nil, channels...)
	retries := 0
	for _, ch := range channels {
		_, r1 := carol2.publishBy(t, ch, "restarted:"+ch, deadline)
		_, r2 := alice.publishBy(t, ch, "survivor:"+ch, deadline)
		retries += r1 + r2
	}
	everyone := []*peer{alice, bob, carol2}
	both := func(ch string) []string { return []string{"restarted:" + ch, "survivor:" + ch} }
	within(max(time.Until(deadline), time.Second), func() bool { return allReceived(everyone, channels, both) })
	var probs problems
	oneEpoch := 0
	for _, ch := range channels {
		epochs := map[string]bool{subscribed[ch].epoch(): true}
		for _, p := range everyone {
			for _, data := range both(ch) {
				f, ok := p.find(ch, data)
				if !ok {
					probs.add("publication after the restart not received", "%s on %s: no %q", p.user, p.node.addr, data)
					continue
				}
				epochs[f.epoch()] = true
			}
		}
		if len(epochs) == 1 {
			oneEpoch++
		} else {
			probs.add("channel showing several epochs after the restart", "%s: %v", ch, sortedKeys(epochs))
		}
	}
	t.Logf("fresh C: %v members %s after its start; %d of %d channels carry traffic both ways with one epoch (%d unavailable retries)",
		members(t, nodes), membersAfter.Round(time.Millisecond), oneEpoch, len(channels), retries)
	probs.report(t)
	if took := time.Since(restartedAt); took > 20*time.Second {
		t.Errorf("the cluster took %s after the restart to carry traffic again, want at most 20s", took)
	}
}

// A node joining while 50 channels are busy moves some of them; every
// subscriber must still see, per channel, one epoch and one gap-free
// sequence, the same as every other subscriber's, holding every
// acknowledged publication.
func TestChaosJoinUnderLoad(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	channels := names("joining", 50)
	var readers, pubs []*peer
	subscribed := map[*peer]map[string]frame{}
	for i, n := range nodes {
		r := join(t, n, fmt.Sprintf("reader%d", i))
		subscribed[r] = r.subscribe(t, nil, channels...)
		readers = append(readers, r)
		pubs = append(pubs, join(t, n, fmt.Sprintf("pub%d", i)))
	}
	traffic := startLoad(pubs, channels, 8*time.Millisecond, 2000)
	defer traffic.halt()
	if !within(waitTimeout, func() bool { return traffic.ackedCount() >= 150 }) {
		t.Fatalf("publishing did not get going: %d acknowledged", traffic.ackedCount())
	}
	joinAt := time.Now()
	nodes = append(nodes, startNode(t, etcd))
	waitForMembers(t, nodes, 4)
	joined := time.Since(joinAt)
	time.Sleep(2 * time.Second) // load after the join
	traffic.halt()

	// A last publication on every channel.
	acked := traffic.ackedList()
	for _, ch := range channels {
		offset, _ := pubs[0].publishBy(t, ch, "last:"+ch, time.Now().Add(waitTimeout))
		acked = append(acked, publication{channel: ch, data: "last:" + ch, offset: offset})
	}
	within(15*time.Second, func() bool { return allReceived(readers, channels, lastOf) })

	var probs problems
	clean := 0
	for _, ch := range channels {
		before := probs.total()
		var reference, referenceEpochs []string
		for i, r := range readers {
			sequence, epochs := r.stream(ch, subscribed[r][ch], &probs)
			if len(epochs) > 1 {
				probs.add("subscriber saw more than one epoch", "%s on %s, %s: %v", r.user, r.node.addr, ch, epochs)
			}
			if gaps := r.frames("gap", ch); len(gaps) > 0 {
				probs.add("gap frame during a join", "%s on %s, %s: %v", r.user, r.node.addr, ch, gaps[0])
			}
			if i == 0 {
				reference, referenceEpochs = sequence, epochs
				continue
			}
			if fmt.Sprint(epochs) != fmt.Sprint(referenceEpochs) {
				probs.add("subscribers of one channel disagree on its epochs", "%s: %s saw %v, %s saw %v", ch, readers[0].user, referenceEpochs, r.user, epochs)
			}
			if strings.Join(sequence, ",") != strings.Join(reference, ",") {
				probs.add("subscribers of one channel saw different sequences",
					"%s: %s saw %d publications, %s saw %d", ch, readers[0].user, len(reference), r.user, len(sequence))
			}
		}
		if probs.total() == before {
			clean++
		}
	}
	missing := 0
	for _, r := range readers {
		index := r.index()
		for _, p := range acked {
			f, ok := index[p.channel+"\x00"+p.data]
			switch {
			case !ok:
				missing++
				probs.add("acknowledged publication not received", "%s on %s: %s %q (offset %d)", r.user, r.node.addr, p.channel, p.data, p.offset)
			case f.offset() != p.offset:
				probs.add("received at another offset than acknowledged", "%s: %s %q acknowledged at %d, received at %d", r.user, p.channel, p.data, p.offset, f.offset())
			}
		}
	}
	unanswered := traffic.unanswered(&probs)
	t.Logf("%d publications acknowledged on %d channels (%d unavailable, %d unanswered; %s) while a 4th node joined (4 members after %s); %d of %d channels kept one epoch and one gap-free sequence at all %d subscribers; %d of %d deliveries owed missing",
		len(acked), len(channels), traffic.unavailable, unanswered, traffic.latency(), joined.Round(time.Millisecond), clean, len(channels), len(readers),
		missing, len(acked)*len(readers))
	probs.report(t)
}

// Large publications in one burst cross nodes whole, in order and once,
// though the subscriber's node freezes for a second in the middle; and a
// full history page of large publications is read across nodes.
func TestChaosLargeBatchesCrossNodes(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	// A lease well beyond the 1 s freeze: this is about a burst crossing
	// to a node that stops reading, not about the node leaving (a loaded
	// machine under -race can take a second to renew after the freeze).
	nodes, nodeAddrs := startPinnedCluster(t, etcd, 3, "--history-size", "1000", "--history-ttl", "5m", "--cluster-lease-ttl", "5s")
	a, b := nodes[0], nodes[1]
	writer := join(t, a, "writer")
	// A sequences it, and B, which freezes, keeps its replica.
	channel := channelPlacedOn(t, "bulk", 0, 1, nodeAddrs)
	if owner := ownerOf(t, nodes, writer, channel); owner != 0 {
		t.Fatalf("%s is owned by node %d, not by A as placement says", channel, owner)
	}
	reader := join(t, b, "reader")
	subscribed := reader.subscribe(t, nil, channel)[channel]

	const burst, size = 100, 60000
	var ids []string
	start := time.Now()
	for i := range 10 {
		ids = append(ids, writer.publishAsync(t, channel, payload(fmt.Sprintf("%03d:", i), size)))
	}
	if !within(waitTimeout, func() bool { return len(reader.messages(channel)) >= 10 }) {
		t.Fatalf("the first 10 publications did not reach B: %d (%s)", len(reader.messages(channel)), reader.state())
	}
	pausedAt := time.Now()
	b.pause(t) // B freezes mid-burst
	for i := 10; i < burst; i++ {
		ids = append(ids, writer.publishAsync(t, channel, payload(fmt.Sprintf("%03d:", i), size)))
	}
	time.Sleep(time.Until(pausedAt.Add(time.Second)))
	b.resume(t)
	var probs problems
	deadline := time.Now().Add(20 * time.Second)
	for i, id := range ids {
		if f, ok := writer.reply(id, time.Until(deadline)); !ok || f.typ() != "published" {
			probs.add("publication not acknowledged", "%03d: %v", i, f)
		}
	}
	writer.mustPublish(t, channel, "end")
	within(20*time.Second, func() bool { _, ok := reader.find(channel, "end"); return ok || reader.isClosed() })
	took := time.Since(start)
	var got, want []string
	reader.stream(channel, subscribed, &probs)
	for _, m := range reader.messages(channel) {
		tag, _, _ := strings.Cut(m.data(), ":")
		got = append(got, tag)
	}
	for i := range burst {
		want = append(want, fmt.Sprintf("%03d", i))
	}
	want = append(want, "end")
	if d := sequenceDiff(got, want); d != "" {
		probs.add("burst not received whole, in order, once", "reader on B (%s): %s", reader.state(), d)
	}
	t.Logf("%d of %d publications of 60 KB arrived across nodes, B frozen 1s mid-burst; %s from the first send to the last delivery",
		countIn(got, want[:burst]), burst, took.Round(time.Millisecond))
	t.Logf("A sent its replica on B the whole state again %v times for confirming nothing in a second",
		a.metric(t, `switchboard_replica_syncs_total{reason="stuck"}`))

	// A full page of history, 1000 × 10 KB, sequenced by A, read on C.
	archive := channelsOwnedBy(t, nodes, writer, "archive", 0, 1)[0]
	const entries, entrySize = 1000, 10000
	var hids []string
	for i := range entries {
		hids = append(hids, writer.publishAsync(t, archive, payload(fmt.Sprintf("%04d:", i), entrySize)))
	}
	deadline = time.Now().Add(20 * time.Second)
	for i, id := range hids {
		if f, ok := writer.reply(id, time.Until(deadline)); !ok || f.typ() != "published" {
			t.Fatalf("archive publication %d not acknowledged: %v (%s)", i, f, writer.state())
		}
	}
	// History comes in pages that fit a client's outbox: follow "more".
	historian := join(t, nodes[2], "historian")
	asked := time.Now()
	var listed []any
	since, pages := 0.0, 0
	for more := true; more; pages++ {
		id, err := historian.ask(map[string]any{"type": "history", "channel": archive, "limit": entries, "since": since})
		if err != nil {
			t.Fatal(err)
		}
		page, ok := historian.reply(id, 30*time.Second)
		if !ok || page.typ() != "history" {
			t.Fatalf("history of %s (%d × %d characters) read on C, page %d: answer %v after %s, historian's %s, C counts %v slow-consumer closes",
				archive, entries, entrySize, pages+1, page, time.Since(asked).Round(time.Millisecond), historian.state(),
				nodes[2].metric(t, "switchboard_slow_consumer_closes_total"))
		}
		publications, _ := page.m["publications"].([]any)
		if len(publications) == 0 || pages > entries {
			t.Fatalf("history page %d is empty or paging does not end: %v", pages+1, page.m["more"])
		}
		listed = append(listed, publications...)
		since = publications[len(publications)-1].(map[string]any)["offset"].(float64)
		more, _ = page.m["more"].(bool)
	}
	var tags []string
	var prev int64
	for i, raw := range listed {
		m, _ := raw.(map[string]any)
		f := frame{m: m}
		tag, _, _ := strings.Cut(f.data(), ":")
		tags = append(tags, tag)
		if i > 0 && f.offset() != prev+1 {
			probs.add("history offsets not consecutive", "entry %d (%s) at offset %d after %d", i, tag, f.offset(), prev)
		}
		prev = f.offset()
		if len(f.data()) != entrySize {
			probs.add("history entry altered", "entry %d (%s) has %d characters, want %d", i, tag, len(f.data()), entrySize)
		}
	}
	var wantTags []string
	for i := range entries {
		wantTags = append(wantTags, fmt.Sprintf("%04d", i))
	}
	if d := sequenceDiff(tags, wantTags); d != "" {
		probs.add("history page incomplete", "%s", d)
	}
	t.Logf("history read on C: %d of %d publications of 10 KB (%.1f MB) in %d pages, %s",
		countIn(tags, wantTags), entries, float64(entries*entrySize)/1e6, pages, time.Since(asked).Round(time.Millisecond))
	probs.report(t)
}

// Publications pipelined to a channel whose node freezes longer than one
// attempt's timeout are retried; each must still be sequenced once.
func TestChaosSlowPublicationsAreSequencedOnce(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	writer := join(t, a, "writer")
	channel := channelsOwnedBy(t, nodes, writer, "slow", 1, 1)[0] // B sequences it
	readers := []*peer{join(t, a, "reader-a"), join(t, c, "reader-c")}
	subscribed := map[*peer]frame{}
	for _, r := range readers {
		subscribed[r] = r.subscribe(t, nil, channel)[channel]
	}

	const n = 50
	var ids []string
	start := time.Now()
	for i := range n / 2 {
		ids = append(ids, writer.publishAsync(t, channel, fmt.Sprintf("slow-%02d", i)))
	}
	pausedAt := time.Now()
	b.pause(t) // with half of them in flight; 1.2 s > the 500 ms attempt timeout
	for i := n / 2; i < n; i++ {
		ids = append(ids, writer.publishAsync(t, channel, fmt.Sprintf("slow-%02d", i)))
	}
	time.Sleep(time.Until(pausedAt.Add(1200 * time.Millisecond)))
	b.resume(t)

	var probs problems
	ackOffsets := map[int64]string{}
	deadline := time.Now().Add(20 * time.Second)
	for i, id := range ids {
		f, ok := writer.reply(id, time.Until(deadline))
		switch {
		case !ok:
			probs.add("publication not answered", "slow-%02d (%s)", i, writer.state())
		case f.typ() != "published":
			probs.add("publication not acknowledged", "slow-%02d: %v", i, f)
		case ackOffsets[f.offset()] != "":
			probs.add("two publications acknowledged at one offset", "offset %d: %s and slow-%02d", f.offset(), ackOffsets[f.offset()], i)
		default:
			ackOffsets[f.offset()] = fmt.Sprintf("slow-%02d", i)
		}
	}
	writer.mustPublish(t, channel, "end")
	deadline = time.Now().Add(20 * time.Second)
	for _, r := range readers {
		within(time.Until(deadline), func() bool { _, ok := r.find(channel, "end"); return ok || r.isClosed() })
	}
	// Every answer is in: count the answers each id got.
	answers := map[string]int{}
	for _, f := range writer.frames("", "") {
		if id, ok := f.m["id"].(string); ok {
			answers[id]++
		}
	}
	for i, id := range ids {
		if answers[id] != 1 {
			probs.add("not one answer per publication", "slow-%02d answered %d times", i, answers[id])
		}
	}
	delivered := 0
	for _, r := range readers {
		r.stream(channel, subscribed[r], &probs)
		times := map[string]int{}
		for _, m := range r.messages(channel) {
			times[m.data()]++
			if want, ok := ackOffsets[m.offset()]; ok && want != m.data() {
				probs.add("delivered at another offset than acknowledged", "%s: %s at offset %d, acknowledged for %s", r.user, m.data(), m.offset(), want)
			}
		}
		for i := range n {
			data := fmt.Sprintf("slow-%02d", i)
			switch times[data] {
			case 1:
				delivered++
			case 0:
				probs.add("publication not delivered", "%s (%s): %s", r.user, r.state(), data)
			default:
				probs.add("publication delivered more than once", "%s: %s %d times", r.user, data, times[data])
			}
		}
	}
	t.Logf("%d pipelined publications, B frozen 1.2s with them in flight: %d of %d deliveries exactly once, %d of %d acknowledged, all answered %s after the first send",
		n, delivered, n*len(readers), len(ackOffsets), n, time.Since(start).Round(time.Millisecond))
	probs.report(t)
}

// When a node is killed under load, a subscriber on a survivor either
// receives each acknowledged publication or is told it may have missed
// some (a gap frame); nothing is lost silently.
func TestChaosNodeKillUnderLoad(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	channels := names("doomed", 30)
	var watchers, pubs []*peer
	for i, n := range nodes[:2] {
		w := join(t, n, fmt.Sprintf("watcher%d", i))
		w.subscribe(t, nil, channels...)
		watchers = append(watchers, w)
		pubs = append(pubs, join(t, n, fmt.Sprintf("pub%d", i)))
	}
	traffic := startLoad(pubs, channels, 5*time.Millisecond, 4000)
	defer traffic.halt()
	// flowingSince: every watcher got a publication sent after since on every channel.
	flowingSince := func(since time.Time) func() bool {
		return func() bool {
			for _, w := range watchers {
				seen := map[string]bool{}
				for _, m := range w.frames("message", "") {
					if at, ok := traffic.sent(m.data()); ok && !at.Before(since) {
						seen[m.channel()] = true
					}
				}
				if len(seen) < len(channels) {
					return false
				}
			}
			return true
		}
	}
	if !within(20*time.Second, flowingSince(time.Now())) {
		t.Fatalf("publications did not flow on every channel before the kill")
	}
	killedAt := time.Now()
	nodes[2].kill()
	restored := within(20*time.Second, flowingSince(killedAt))
	time.Sleep(500 * time.Millisecond) // load after the failover
	traffic.halt()

	acked := traffic.ackedList()
	for _, ch := range channels {
		sent := time.Now()
		offset, _ := pubs[0].publishBy(t, ch, "last:"+ch, time.Now().Add(waitTimeout))
		acked = append(acked, publication{channel: ch, data: "last:" + ch, offset: offset, sent: sent})
	}
	within(waitTimeout, func() bool { return allReceived(watchers, channels, lastOf) })

	// Received, told (a gap frame on the channel that arrived at or after
	// the publication was sent), or silently lost.
	var probs problems
	received, told, silent, gapFrames := 0, 0, 0, 0
	window := time.Duration(0)
	for _, w := range watchers {
		index := w.index()
		gaps := map[string][]time.Time{}
		for _, g := range w.frames("gap", "") {
			gaps[g.channel()] = append(gaps[g.channel()], g.at)
			gapFrames++
		}
		for _, p := range acked {
			if _, ok := index[p.channel+"\x00"+p.data]; ok {
				received++
				continue
			}
			covered := false
			for _, at := range gaps[p.channel] {
				covered = covered || !at.Before(p.sent)
			}
			if covered {
				told++
			} else {
				silent++
				probs.add("acknowledged publication silently lost", "%s on %s: %s %q (offset %d, sent %s after the kill)",
					w.user, w.node.addr, p.channel, p.data, p.offset, p.sent.Sub(killedAt).Round(time.Millisecond))
			}
		}
		// The failover window: kill to the first post-kill publication on each channel.
		first := map[string]time.Time{}
		for _, m := range w.frames("message", "") {
			if at, ok := traffic.sent(m.data()); ok && !at.Before(killedAt) && first[m.channel()].IsZero() {
				first[m.channel()] = m.at
			}
		}
		for _, at := range first {
			window = max(window, at.Sub(killedAt))
		}
	}
	if !restored {
		t.Errorf("publications did not flow again on all %d channels within 20s of the kill", len(channels))
	}
	unanswered := traffic.unanswered(&probs)
	t.Logf("%d acknowledged publications × %d survivor-side subscribers: %d received, %d told by a gap frame, %d silently lost (%d gap frames in all); %d answered unavailable, %d outcome_unknown (in flight to the killed node), %d unanswered, %s; failover window %s",
		len(acked), len(watchers), received, told, silent, gapFrames, traffic.unavailable, traffic.unknown, unanswered, traffic.latency(), window.Round(10*time.Millisecond))
	probs.report(t)
}

// Users whose only connection died with a node are not kept out by the
// per-user limit: they are accepted on the survivors within the failover
// window, and the limit still holds afterwards.
func TestChaosUserLimitAfterNodeLoss(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3, "--max-connections-per-user", "1")
	users := make([]string, 6)
	for i := range users {
		users[i] = fmt.Sprintf("limited%d", i)
		join(t, nodes[2], users[i])
	}
	var r *refused
	if _, err := tryJoin(t, nodes[0], users[0]); !errors.As(err, &r) || r.code != 4029 {
		t.Fatalf("a second connection of %s was not refused with 4029 before the kill: %v", users[0], err)
	}

	killedAt := time.Now()
	nodes[2].kill()
	type back struct {
		p        *peer
		took     time.Duration
		failures []error
	}
	results := make([]back, len(users))
	var wg sync.WaitGroup
	for i, user := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, failures := rejoin(t, nodes[i%2], user, 10*time.Second)
			results[i] = back{p, time.Since(killedAt), failures}
		}()
	}
	wg.Wait()
	slowest, accepted := time.Duration(0), 0
	failures := map[string]int{}
	for i, res := range results {
		for _, err := range res.failures {
			if errors.As(err, &r) {
				failures[fmt.Sprintf("closed with %d", r.code)]++
			} else {
				failures[err.Error()]++
			}
		}
		switch {
		case res.p == nil:
			t.Errorf("%s was not accepted within 10s of the kill: %d attempts, the last %v", users[i], len(res.failures), res.failures[len(res.failures)-1])
		case res.took > 10*time.Second:
			t.Errorf("%s was accepted only %s after the kill, want within 10s", users[i], res.took.Round(time.Millisecond))
		default:
			accepted++
			slowest = max(slowest, res.took)
		}
	}
	t.Logf("%d of %d users accepted again on the survivors, the last %s after the kill; failed attempts: %v",
		accepted, len(users), slowest.Round(10*time.Millisecond), failures)
	for i, res := range results {
		if res.p == nil {
			continue
		}
		if _, err := tryJoin(t, nodes[(i+1)%2], users[i]); !errors.As(err, &r) || r.code != 4029 {
			t.Errorf("after the failover a second connection of %s was not refused with 4029: %v", users[i], err)
		}
	}
}

// Every node stopped gracefully and replaced in turn, under load: clients
// move, and presence then lists exactly the live users with their real
// connection counts, no ghost of a stopped node.
func TestChaosRollingRestartNoGhosts(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	const channel = "lobby:rolling"
	var nodesMu sync.Mutex
	live := func() []*server {
		nodesMu.Lock()
		defer nodesMu.Unlock()
		var out []*server
		for _, n := range nodes {
			if !n.hasExited() {
				out = append(out, n)
			}
		}
		return out
	}
	// Six users, two of them with two connections, spread over the nodes.
	type roamer struct {
		user string
		p    *peer
	}
	var roamers []*roamer
	for _, user := range []string{"r0", "r0", "r1", "r1", "r2", "r3", "r4", "r5"} {
		roamers = append(roamers, &roamer{user: user})
	}
	connect := func(r *roamer, i int) {
		candidates := live()
		r.p = join(t, candidates[i%len(candidates)], r.user)
		r.p.subscribe(t, map[string]any{"presence": true}, channel)
	}
	for i, r := range roamers {
		connect(r, i)
	}

	// An announcer publishes throughout, reconnecting when its node goes.
	var stop atomic.Bool
	var ticks, unavailable, reconnects atomic.Int64
	var announcer sync.WaitGroup
	announcer.Add(1)
	go func() {
		defer announcer.Done()
		var p *peer
		for i := 0; i < 3000 && !stop.Load(); i++ {
			if p == nil || p.isClosed() {
				candidates := live()
				q, err := tryJoin(t, candidates[i%len(candidates)], "announcer")
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				p = q
				reconnects.Add(1)
			}
			switch _, code := p.publish(channel, fmt.Sprintf("tick-%d", i), waitTimeout); code {
			case "":
				ticks.Add(1)
			case "unavailable":
				unavailable.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { stop.Store(true); announcer.Wait() }()

	for i := range 3 {
		nodesMu.Lock()
		old := nodes[i]
		nodesMu.Unlock()
		old.stop()
		for j, r := range roamers {
			if r.p.node != old {
				if r.p.isClosed() {
					t.Fatalf("%s on %s was closed (%s) when %s stopped", r.user, r.p.node.addr, r.p.state(), old.addr)
				}
				continue
			}
			if code, closed := r.p.closeCode(waitTimeout); !closed || code != 1012 {
				t.Fatalf("%s on the stopped node: %s, want closed with 1012", r.user, r.p.state())
			}
			connect(r, j)
		}
		fresh := startNode(t, etcd)
		nodesMu.Lock()
		nodes[i] = fresh
		nodesMu.Unlock()
		waitForMembers(t, live(), 3)
	}

	closer := join(t, nodes[0], "closer")
	closer.mustPublish(t, channel, "after the restarts")
	var probs problems
	for _, r := range roamers {
		if !within(waitTimeout, func() bool { _, ok := r.p.find(channel, "after the restarts"); return ok }) {
			probs.add("client not receiving after the restarts", "%s on %s (%s)", r.user, r.p.node.addr, r.p.state())
		}
	}
	stop.Store(true)
	announcer.Wait()

	// Presence asked on every node: exactly the live users, real counts.
	want := map[string]int{}
	for _, r := range roamers {
		want[r.user]++
	}
	var auditors []*peer
	for i, n := range nodes {
		auditor := join(t, n, fmt.Sprintf("auditor%d", i))
		auditor.subscribe(t, nil, channel)
		auditors = append(auditors, auditor)
		want[auditor.user] = 1
	}
	exactAfter := time.Duration(0)
	for _, auditor := range auditors {
		asked := time.Now()
		var last string
		exact := within(5*time.Second, func() bool {
			f := auditor.call(t, map[string]any{"type": "presence", "channel": channel}, waitTimeout)
			got := map[string]int{}
			users, _ := f.m["users"].([]any)
			for _, u := range users {
				m, _ := u.(map[string]any)
				user, _ := m["user"].(string)
				n, _ := m["connections"].(float64)
				got[user] = int(n)
			}
			last = presenceDiff(got, want)
			if f.typ() != "presence" {
				last = f.String()
			}
			return last == ""
		})
		if !exact {
			probs.add("presence not exactly the live users", "asked on %s: %s", auditor.node.addr, last)
		}
		exactAfter = max(exactAfter, time.Since(asked))
	}
	t.Logf("3 nodes restarted in turn (%d ticks published, %d unavailable, announcer connected %d times); %d connections of %d users moved and receive; presence exact on every node within %s",
		ticks.Load(), unavailable.Load(), reconnects.Load(), len(roamers), len(want)-len(auditors), exactAfter.Round(time.Millisecond))
	probs.report(t)
}

// lastOf names the final publication on a channel, after which nothing is
// in flight: whatever was sequenced before it reaches a subscriber first.
func lastOf(channel string) []string { return []string{"last:" + channel} }

// sequenceDiff describes how got differs from want, or "" when equal.
func sequenceDiff(got, want []string) string {
	if strings.Join(got, ",") == strings.Join(want, ",") {
		return ""
	}
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	var missing, doubled []string
	for _, w := range want {
		switch {
		case seen[w] == 0:
			missing = append(missing, w)
		case seen[w] > 1:
			doubled = append(doubled, fmt.Sprintf("%s×%d", w, seen[w]))
		}
	}
	firstDiff := 0
	for firstDiff < len(got) && firstDiff < len(want) && got[firstDiff] == want[firstDiff] {
		firstDiff++
	}
	return fmt.Sprintf("received %d of %d; missing %s; duplicated %s; first difference at position %d",
		len(got), len(want), abbreviate(missing), abbreviate(doubled), firstDiff)
}

func abbreviate(list []string) string {
	if len(list) > 8 {
		return fmt.Sprintf("%v … (%d)", list[:8], len(list))
	}
	return fmt.Sprint(list)
}

// countIn counts the distinct items of want that appear in got.
func countIn(got, want []string) int {
	have := map[string]bool{}
	for _, g := range got {
		have[g] = true
	}
	n := 0
	for _, w := range want {
		if have[w] {
			n++
		}
	}
	return n
}

// presenceDiff describes how a presence answer differs from the live
// users, or "" when it is exact.
func presenceDiff(got, want map[string]int) string {
	var diffs []string
	for _, user := range sortedKeys(got) {
		if want[user] == 0 {
			diffs = append(diffs, fmt.Sprintf("ghost %s (%d connections)", user, got[user]))
		} else if got[user] != want[user] {
			diffs = append(diffs, fmt.Sprintf("%s with %d connections, has %d", user, got[user], want[user]))
		}
	}
	for _, user := range sortedKeys(want) {
		if _, ok := got[user]; !ok {
			diffs = append(diffs, "missing "+user)
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}
