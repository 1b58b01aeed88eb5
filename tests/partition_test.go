//go:build linux

package tests

// A real network partition: three broker processes, each in a network
// namespace of its own, joined by a bridge in the host namespace where the
// test process runs etcd and the clients. iptables rules inside one node's
// namespace cut it off from etcd and from its peers while its clients still
// reach it.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchboard/switchboard/cluster"
)

const (
	partChannels   = 20
	partLeaseTTL   = 2 * time.Second
	partSlack      = 200 * time.Millisecond // an acknowledgement already in flight at the deadline
	partReadySlack = 500 * time.Millisecond
	partCutFor     = 12 * time.Second
	partClientPort = 8765
	partNodePort   = 7001
	partWindow     = 4 // publications a publisher leaves unanswered at most
	// How long after the heal the cut-off node has to exit: noticing the
	// lost lease, then a graceful shutdown (--shutdown-timeout is 10 s).
	partExitWait = 15 * time.Second
)

// TestPartitionCutOffNodeStopsSequencing cuts node 3 off from etcd and from
// both peers for 12 s while its own clients still reach it, then heals.
func TestPartitionCutOffNodeStopsSequencing(t *testing.T) {
	partRequireNetns(t)
	began := time.Now()
	pn := partBuildNet(t)
	t.Logf("topology: bridge %s %s/24; nodes %s, %s, %s in namespaces %s",
		pn.bridge, pn.hostIP(), pn.nodeIP(0), pn.nodeIP(1), pn.nodeIP(2), strings.Join(pn.ns[:], ", "))

	etcd, clientPort, peerPort := partStartEtcd(t, pn.hostIP())
	nodes := make([]*server, 3)
	for i := range nodes {
		nodes[i] = partStartNode(t, pn, i, etcd.Endpoint)
	}
	for i, n := range nodes {
		partEventually(t, 20*time.Second, fmt.Sprintf("node %d to see 3 members before the cut", i+1), func() bool {
			m, err := partMembers(n.addr)
			return err == nil && m == 3
		})
	}
	t.Logf("3 nodes up, each counting 3 members, %s after the start", time.Since(began).Round(10*time.Millisecond))

	// The probe itself must work before it can show that the cut works.
	etcdAddr := net.JoinHostPort(pn.hostIP(), strconv.Itoa(clientPort))
	etcdPeerAddr := net.JoinHostPort(pn.hostIP(), strconv.Itoa(peerPort))
	peer1, peer2 := net.JoinHostPort(pn.nodeIP(0), strconv.Itoa(partNodePort)), net.JoinHostPort(pn.nodeIP(1), strconv.Itoa(partNodePort))
	node3Peer := net.JoinHostPort(pn.nodeIP(2), strconv.Itoa(partNodePort))
	node3Client := net.JoinHostPort(pn.nodeIP(2), strconv.Itoa(partClientPort))
	for _, target := range []string{etcdAddr, etcdPeerAddr, peer1, peer2} {
		if err := partDialFrom(pn.ns[2], target, time.Second); err != nil {
			t.Fatalf("harness: before the cut node 3's namespace cannot reach %s: %v", target, err)
		}
	}
	if err := partDialFrom(pn.ns[0], node3Peer, time.Second); err != nil {
		t.Fatalf("harness: before the cut node 1's namespace cannot reach node 3 at %s: %v", node3Peer, err)
	}

	names := make([]string, partChannels)
	for i := range names {
		names[i] = fmt.Sprintf("part:%d", i)
	}
	rec := newPartRecorder()

	// A subscriber on every node, on every channel.
	subs := make([]*partClient, 3)
	for i, n := range nodes {
		c := n.connect(t, fmt.Sprintf("sub%d", i+1))
		for _, ch := range names {
			c.subscribe(ch)
		}
		subs[i] = rec.attach(fmt.Sprintf("sub%d", i+1), i+1, c)
	}
	// Publishers on every node publish round the 20 channels, one
	// publication every 20 ms per node. Each channel has its own publisher
	// connection on each node, so that a publication waiting for an
	// unreachable channel cannot hold back the acknowledgements of others
	// on the same connection and hide them.
	pubs := make([][]*partClient, 3)
	for i, n := range nodes {
		for c := range names {
			name := fmt.Sprintf("pub%d-%02d", i+1, c)
			pubs[i] = append(pubs[i], rec.attach(name, i+1, n.connect(t, name)))
		}
	}
	var stopPublishing atomic.Bool
	var publishers sync.WaitGroup
	for i := range pubs {
		for c, p := range pubs[i] {
			publishers.Add(1)
			go func() {
				defer publishers.Done()
				time.Sleep(time.Duration(c*20+i*7) * time.Millisecond) // round the channels
				p.publishLoop(names[c], &stopPublishing, time.Now().Add(90*time.Second))
			}()
		}
	}
	stopAll := sync.OnceFunc(func() { stopPublishing.Store(true); publishers.Wait() })
	defer stopAll()

	// Before the cut every subscriber sees every publisher on every channel.
	warm := time.Now()
	partEventually(t, 10*time.Second, "publications from all 3 nodes to reach the subscribers on all 3 nodes on all 20 channels before the cut", func() bool {
		for _, s := range subs {
			for from := 1; from <= 3; from++ {
				if len(rec.firstReceipts(s.name, names, warm, from)) < partChannels {
					return false
				}
			}
		}
		return true
	})
	t.Logf("before the cut: every subscriber got every node's publications on all %d channels within %s",
		partChannels, time.Since(warm).Round(10*time.Millisecond))

	// Node 3's readiness, every 100 ms, from before the cut on.
	ready := &partReadyLog{}
	stopReady := make(chan struct{})
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		ready.poll(nodes[2].addr, stopReady)
	}()
	stopReadyOnce := sync.OnceFunc(func() { close(stopReady); <-readyDone })
	defer stopReadyOnce()
	time.Sleep(300 * time.Millisecond)

	// The cut.
	cutAt := time.Now()
	pn.cut(t, clientPort, peerPort)
	t.Logf("cut: node 3 (%s) cut off from etcd (%s, %s) and from nodes 1 and 2 at %s", pn.nodeIP(2), etcdAddr, etcdPeerAddr, cutAt.Format("15:04:05.000"))

	// The cut is real: node 3 reaches neither etcd nor its peers, nor they
	// it, and its clients still reach it.
	for _, target := range []string{etcdAddr, etcdPeerAddr, peer1, peer2} {
		if err := partDialFrom(pn.ns[2], target, 700*time.Millisecond); err == nil {
			t.Fatalf("harness: during the cut node 3's namespace still connects to %s", target)
		} else {
			t.Logf("during the cut, node 3 → %s: %v", target, err)
		}
	}
	if err := partDialFrom(pn.ns[0], node3Peer, 700*time.Millisecond); err == nil {
		t.Fatalf("harness: during the cut node 1's namespace still connects to node 3 at %s", node3Peer)
	}
	partCheckClientReach := func(when string) {
		conn, err := net.DialTimeout("tcp", node3Client, 2*time.Second)
		var ne net.Error
		switch {
		case err == nil:
			conn.Close()
			t.Logf("%s: a client in the host namespace connects to node 3 at %s", when, node3Client)
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("harness: %s clients cannot reach node 3 at %s (the rules drop client traffic): %v", when, node3Client, err)
		default: // refused: reached, nobody listening (the node may have closed its listener or exited)
			t.Logf("%s: node 3 at %s reached but refused: %v", when, node3Client, err)
		}
	}
	partCheckClientReach("during the cut")

	// Until the heal: membership on the majority side, and node 3's own view.
	time.Sleep(time.Until(cutAt.Add(partCutFor - time.Second)))
	for i, n := range nodes {
		m, err := partMembers(n.addr)
		t.Logf("%s after the cut node %d counts %v members (err %v)", time.Since(cutAt).Round(100*time.Millisecond), i+1, m, err)
	}
	partCheckClientReach("at the end of the cut")
	time.Sleep(time.Until(cutAt.Add(partCutFor)))

	// The heal.
	healAt := time.Now()
	pn.heal(t)
	t.Logf("heal: rules removed %s after the cut", healAt.Sub(cutAt).Round(10*time.Millisecond))
	if err := partDialFrom(pn.ns[2], etcdAddr, 2*time.Second); err != nil {
		t.Fatalf("harness: after the heal node 3's namespace cannot reach etcd at %s: %v", etcdAddr, err)
	}
	if err := partDialFrom(pn.ns[2], peer1, 2*time.Second); err != nil {
		t.Fatalf("harness: after the heal node 3's namespace cannot reach node 1 at %s: %v", peer1, err)
	}

	// A node whose lease expired while it was cut off must close its
	// clients with 1012 and exit, so that its supervisor starts a fresh member.
	old3 := nodes[2]
	exited := false
	select {
	case <-old3.exited:
		exited = true
	case <-time.After(partExitWait):
	}
	stopReadyOnce()
	if exited {
		code := old3.cmd.ProcessState.ExitCode()
		t.Logf("old node 3 exited with code %d, %s after the cut, %s after the heal",
			code, partSince(cutAt, partExitTime(old3)), partSince(healAt, partExitTime(old3)))
		if code == 0 {
			t.Errorf("BROKER: node 3, whose lease expired while it was cut off, exited with code 0; it must exit non-zero so a supervisor restarts it")
		}
	} else {
		closedNow := 0
		for _, c := range append([]*partClient{subs[2]}, pubs[2]...) {
			if _, _, closed := c.closeInfo(); closed {
				closedNow++
			}
		}
		t.Errorf("BROKER: node 3, whose lease expired while it was cut off, was still running %s after the heal (%d of its %d clients closed by then); it must close its clients with 1012 and exit so a supervisor starts a fresh member",
			partExitWait, closedNow, len(pubs[2])+1)
		old3.kill() // the supervisor gives up on it, to go on with the restart
		t.Logf("old node 3's log, last lines:\n%s", lastLines(old3.output(), 40))
	}
	closeCodes := map[uint16]int{}
	var firstClose, lastClose time.Time
	var wrongCode []string
	for _, c := range append([]*partClient{subs[2]}, pubs[2]...) {
		select {
		case <-c.done:
		case <-time.After(3 * time.Second):
		}
		code, at, closed := c.closeInfo()
		if !closed {
			t.Errorf("BROKER: node 3's client %s was still connected after node 3 ended", c.name)
			continue
		}
		closeCodes[code]++
		if firstClose.IsZero() || at.Before(firstClose) {
			firstClose = at
		}
		if at.After(lastClose) {
			lastClose = at
		}
		if code != 1012 {
			wrongCode = append(wrongCode, fmt.Sprintf("%s: %d", c.name, code))
		}
	}
	t.Logf("node 3's %d clients were closed with codes %v, from %s to %s after the cut",
		len(pubs[2])+1, closeCodes, partSince(cutAt, firstClose), partSince(cutAt, lastClose))
	if exited && len(wrongCode) > 0 {
		t.Errorf("BROKER: node 3 closed %d of its clients with a code other than 1012 (server restarting: reconnect): %s",
			len(wrongCode), strings.Join(wrongCode[:min(5, len(wrongCode))], ", "))
	}
	stopAll()

	// Safety: node 3 stops acknowledging before its lease could have
	// expired at etcd.
	deadline := cutAt.Add(partLeaseTTL + partSlack)
	isPub3 := func(e partEvent) bool { return e.node == 3 && strings.HasPrefix(e.client, "pub") }
	// The epochs the majority sequenced each channel in after cut+2s,
	// from what subscribers received of publications acknowledged on
	// nodes 1 and 2. A node-3 acknowledgement in one of them went through
	// the majority's sequencer (node 3 relayed it); one in another epoch,
	// or that no subscriber received, was sequenced apart.
	majorityEpochs := map[string]map[string]bool{}
	for _, e := range rec.matching(func(e partEvent) bool {
		return e.kind == "published" && e.node != 3 && strings.HasPrefix(e.client, "pub") && e.at.After(cutAt.Add(partLeaseTTL))
	}) {
		if ep, ok := rec.epochOf(e.id); ok {
			if majorityEpochs[e.channel] == nil {
				majorityEpochs[e.channel] = map[string]bool{}
			}
			majorityEpochs[e.channel][ep] = true
		}
	}
	throughMajority := func(e partEvent) bool {
		ep, ok := rec.epochOf(e.id)
		return ok && majorityEpochs[e.channel][ep]
	}
	acks3 := rec.matching(func(e partEvent) bool { return e.kind == "published" && isPub3(e) && e.at.After(cutAt) })
	lateCut, lateHealed, healedRelayed := 0, 0, 0
	var last3, lastCut time.Time
	for _, e := range acks3 {
		switch {
		case e.at.After(healAt):
			lateHealed++
			if throughMajority(e) {
				healedRelayed++
			}
		case e.at.After(deadline):
			lateCut++
			if e.at.After(lastCut) {
				lastCut = e.at
			}
		}
		if e.at.After(last3) {
			last3 = e.at
		}
	}
	errs3 := map[string]int{}
	for _, e := range rec.matching(func(e partEvent) bool { return e.kind == "error" && isPub3(e) && e.at.After(cutAt) }) {
		errs3[e.code]++
	}
	t.Logf("node 3 acknowledged %d publications after the cut, the last %s after it: %d later than cut+%s while still cut off, %d after the heal; errors to its publishers after the cut: %v",
		len(acks3), partSince(cutAt, last3), lateCut, partLeaseTTL+partSlack, lateHealed, errs3)
	if lateCut > 0 {
		t.Errorf("BROKER: node 3, cut off from etcd and its peers, went on acknowledging publications: %d later than the lease TTL (%s) + %s after the cut and before the heal, the last %s after the cut. A node that cannot renew its lease must stop sequencing before the lease can expire at etcd (answer unavailable, or close with 1012)",
			lateCut, partLeaseTTL, partSlack, partSince(cutAt, lastCut))
	}
	// After the heal, until it learns its lease is gone, node 3 may still
	// pass its clients' publications on to the majority's sequencers:
	// those are sequenced once, by the owner. It must sequence none itself.
	t.Logf("after the heal node 3 acknowledged %d publications before it exited, the last %s after the heal: %d sequenced by the majority, %d apart",
		lateHealed, partSince(healAt, last3), healedRelayed, lateHealed-healedRelayed)
	if apart := lateHealed - healedRelayed; apart > 0 {
		t.Errorf("BROKER: after the heal node 3, no longer a member (its lease expired while it was cut off), sequenced %d publications itself, apart from the majority. A node whose lease expired must not sequence again: it closes its clients with 1012 and exits",
			apart)
	}
	// What node 3's own subscriber saw while cut off can only have been
	// sequenced on node 3: the message's timestamp is when.
	var seq3 []string
	seqCount := 0
	for _, e := range rec.matching(func(e partEvent) bool {
		return e.kind == "message" && e.client == "sub3" && e.at.Before(healAt) && e.seqAt.After(deadline)
	}) {
		seqCount++
		if len(seq3) < 5 {
			seq3 = append(seq3, fmt.Sprintf("%s offset %d at cut+%s", e.channel, e.offset, partSince(cutAt, e.seqAt)))
		}
	}
	t.Logf("node 3's subscriber received %d publications sequenced on node 3 later than cut+%s while it was cut off", seqCount, partLeaseTTL+partSlack)
	if seqCount > 0 {
		t.Errorf("BROKER: node 3 sequenced %d publications later than cut+%s while cut off from etcd (its own subscriber received them): %s",
			seqCount, partLeaseTTL+partSlack, strings.Join(seq3, ", "))
	}

	// No channel is sequenced on both sides at once: node-3
	// acknowledgements sequenced apart from the majority (see
	// throughMajority) must not overlap the majority's in time.
	after := cutAt.Add(partLeaseTTL)
	var both []string
	ackOverlap, relayed, apart := 0, 0, 0
	for _, ch := range names {
		var a, aApart, b []time.Time
		for _, e := range rec.matching(func(e partEvent) bool { return e.kind == "published" && e.channel == ch && e.at.After(after) }) {
			switch {
			case !strings.HasPrefix(e.client, "pub"):
			case e.node == 3:
				a = append(a, e.at)
				if throughMajority(e) {
					relayed++
				} else {
					apart++
					aApart = append(aApart, e.at)
				}
			default:
				b = append(b, e.at)
			}
		}
		if partOverlap(a, b) {
			ackOverlap++
		}
		if partOverlap(aApart, b) {
			both = append(both, fmt.Sprintf("%s (node 3 alone: %d acknowledged %s..%s; nodes 1-2: %s..%s)", ch, len(aApart),
				partSince(cutAt, partMin(aApart)), partSince(cutAt, partMax(aApart)), partSince(cutAt, partMin(b)), partSince(cutAt, partMax(b))))
		}
	}
	t.Logf("after cut+%s: %d channels had acknowledgements from node 3 and from nodes 1-2 at overlapping times; node 3's acknowledgements: %d in an epoch the majority sequenced in (relayed), %d in another epoch or received by no subscriber (sequenced apart); channels sequenced on both sides at once: %d",
		partLeaseTTL, ackOverlap, relayed, apart, len(both))
	if len(both) > 0 {
		t.Errorf("BROKER: split brain: %d channels were sequenced by node 3 apart from the majority (publications it acknowledged in an epoch the majority did not use, or that no subscriber received) while the majority sequenced them too, after cut+%s:\n  %s",
			len(both), partLeaseTTL, strings.Join(both, "\n  "))
	}
	if broken := rec.streamViolations(); len(broken) > 0 {
		t.Errorf("BROKER: a subscriber saw a channel's stream go back (an offset not above the last in its epoch, or an earlier epoch again), as when two sequencers feed it: %d cases: %s",
			len(broken), strings.Join(broken[:min(5, len(broken))], "; "))
	} else {
		t.Logf("every subscriber saw each channel's offsets rise within an epoch and no epoch come back")
	}

	// Honesty: /readyz says 503 from at most ~2 s after the cut until the heal.
	samples := ready.snapshot()
	var first503 time.Time
	var okDuringCut []string
	codes := map[int]int{}
	for _, s := range samples {
		if s.at.Before(cutAt) || s.at.After(healAt) {
			continue
		}
		codes[s.code]++
		if s.code == 503 && first503.IsZero() {
			first503 = s.at
		}
		if s.code == 200 && s.at.After(cutAt.Add(partLeaseTTL+partReadySlack)) {
			okDuringCut = append(okDuringCut, partSince(cutAt, s.at))
		}
	}
	before := map[int]int{}
	for _, s := range samples {
		if s.at.Before(cutAt) {
			before[s.code]++
		}
	}
	t.Logf("node 3 /readyz: before the cut %v; during the cut %v (0: no answer); first 503 %s after the cut",
		before, codes, partSince(cutAt, first503))
	if before[200] == 0 {
		t.Fatalf("harness: node 3's /readyz never answered 200 before the cut (%v)", before)
	}
	switch {
	case first503.IsZero():
		t.Errorf("BROKER: node 3's /readyz never answered 503 while node 3 was cut off from etcd for %s", partCutFor)
	case first503.After(cutAt.Add(partLeaseTTL + partReadySlack)):
		t.Errorf("BROKER: node 3's /readyz first answered 503 %s after the cut; it must from at most the lease TTL (%s) + %s",
			partSince(cutAt, first503), partLeaseTTL, partReadySlack)
	}
	if len(okDuringCut) > 0 {
		t.Errorf("BROKER: node 3's /readyz answered 200 %d times while cut off, later than cut+%s (at %s ...)",
			len(okDuringCut), partLeaseTTL+partReadySlack, strings.Join(okDuringCut[:min(5, len(okDuringCut))], ", "))
	}

	// The majority keeps working: publications made on nodes 1 and 2
	// after the cut reach the subscribers on nodes 1 and 2 on every channel.
	var window time.Duration
	var missing []string
	flow := map[string]time.Time{}
	for _, sub := range []string{"sub1", "sub2"} {
		got := rec.firstReceipts(sub, names, cutAt, 1, 2)
		for _, ch := range names {
			at, ok := got[ch]
			if !ok {
				missing = append(missing, sub+"/"+ch)
				continue
			}
			if at.After(flow[ch]) {
				flow[ch] = at
			}
		}
	}
	for _, at := range flow {
		window = max(window, at.Sub(cutAt))
	}
	t.Logf("majority: publications on nodes 1 and 2 flowed again on %d of %d channels, all of them within %s of the cut",
		len(flow), partChannels, window.Round(10*time.Millisecond))
	if len(missing) > 0 {
		t.Errorf("BROKER: after the cut nothing published on nodes 1 and 2 reached their subscribers on %d channel(s) before the heal: %v", len(missing), missing)
	} else if window > 10*time.Second {
		t.Errorf("BROKER: the majority took %s after the cut to carry publications on all %d channels again; want at most 10s", window.Round(10*time.Millisecond), partChannels)
	}

	// The supervisor starts node 3 afresh in its namespace.
	restartAt := time.Now()
	nodes[2] = partStartNode(t, pn, 2, etcd.Endpoint)
	allThree := true
	for i, n := range nodes {
		ok := partWait(time.Until(restartAt.Add(20*time.Second)), func() bool {
			m, err := partMembers(n.addr)
			return err == nil && m == 3
		})
		if !ok {
			m, err := partMembers(n.addr)
			t.Errorf("BROKER: 20s after node 3 was started again node %d counts %v members (err %v), want 3", i+1, m, err)
			allThree = false
		}
	}
	if allThree {
		t.Logf("after the restart all three nodes count 3 members %s after it started", time.Since(restartAt).Round(10*time.Millisecond))
	}

	// Node 3 and nodes 1 and 2 exchange publications on every channel.
	sub3 := nodes[2].connect(t, "sub3-new")
	for _, ch := range names {
		sub3.subscribe(ch)
	}
	rec.attach("sub3-new", 3, sub3)
	xpubs := []*partClient{
		rec.attach("xpub1", 1, nodes[0].connect(t, "xpub1")),
		rec.attach("xpub2", 2, nodes[1].connect(t, "xpub2")),
		rec.attach("xpub3", 3, nodes[2].connect(t, "xpub3")),
	}
	exchangeFrom := time.Now()
	need := []struct {
		sub  string
		from int
	}{{"sub1", 3}, {"sub2", 3}, {"sub3-new", 1}, {"sub3-new", 2}}
	pending := func() map[int][]string { // publisher node → channels some subscriber still lacks
		out := map[int][]string{}
		for _, n := range need {
			got := rec.firstReceipts(n.sub, names, exchangeFrom, n.from)
			for _, ch := range names {
				if _, ok := got[ch]; !ok {
					out[n.from] = append(out[n.from], ch)
				}
			}
		}
		return out
	}
	exchangeDeadline := time.Now().Add(10 * time.Second)
	for {
		p := pending()
		if len(p) == 0 || time.Now().After(exchangeDeadline) {
			break
		}
		for from, chans := range p {
			seen := map[string]bool{}
			for _, ch := range chans {
				if !seen[ch] {
					seen[ch] = true
					_ = xpubs[from-1].publish(ch)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if p := pending(); len(p) > 0 {
		var lines []string
		for _, n := range need {
			got := rec.firstReceipts(n.sub, names, exchangeFrom, n.from)
			if len(got) < partChannels {
				lines = append(lines, fmt.Sprintf("%s got node %d's publications on %d of %d channels", n.sub, n.from, len(got), partChannels))
			}
		}
		t.Errorf("BROKER: after the restart node 3 and nodes 1-2 did not exchange publications on all %d channels within 10s: %s",
			partChannels, strings.Join(lines, "; "))
	} else {
		t.Logf("after the restart node 3 and nodes 1-2 exchanged publications on all %d channels in %s",
			partChannels, time.Since(exchangeFrom).Round(10*time.Millisecond))
	}

	// No publication was applied twice, and no two publications share a
	// channel's offset within one epoch.
	dups, clashes := rec.duplicates()
	t.Logf("publications received twice by one subscriber: %d; offsets carrying two different publications in one epoch: %d", len(dups), len(clashes))
	if len(dups) > 0 {
		t.Errorf("BROKER: publications applied more than once (subscriber: publication ×count): %s", strings.Join(dups[:min(10, len(dups))], ", "))
	}
	if len(clashes) > 0 {
		t.Errorf("BROKER: two sequencers gave the same offset in the same epoch to different publications: %s", strings.Join(clashes[:min(10, len(clashes))], "; "))
	}
	t.Logf("total %s", time.Since(began).Round(100*time.Millisecond))
}

// --- topology ------------------------------------------------------------

// partNet is the bridge and the three namespaces of one run.
type partNet struct {
	subnet   int
	bridge   string
	ns       [3]string
	hostVeth [3]string
}

func (n *partNet) hostIP() string      { return fmt.Sprintf("10.199.%d.1", n.subnet) }
func (n *partNet) nodeIP(i int) string { return fmt.Sprintf("10.199.%d.%d", n.subnet, i+2) }

func partRun(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// partRequireNetns skips the test where namespaces, veth pairs, bridges or
// iptables inside a namespace are missing or not permitted.
func partRequireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition test skipped: it needs root to create network namespaces")
	}
	for tool, pkg := range map[string]string{"ip": "iproute2", "iptables": "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("partition test skipped: %s is not installed (Debian package %s)", tool, pkg)
		}
	}
	pid := os.Getpid()
	probe := fmt.Sprintf("sbprobe%d", pid)
	if err := partRun("ip", "netns", "add", probe); err != nil {
		t.Skipf("partition test skipped: network namespaces are not permitted here: %v", err)
	}
	defer func() { _ = partRun("ip", "netns", "del", probe) }()
	veth := fmt.Sprintf("sbq%d", pid)
	if err := partRun("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", probe); err != nil {
		t.Skipf("partition test skipped: veth pairs are not permitted here: %v", err)
	}
	_ = partRun("ip", "link", "del", veth)
	br := fmt.Sprintf("sbqb%d", pid)
	if err := partRun("ip", "link", "add", br, "type", "bridge"); err != nil {
		t.Skipf("partition test skipped: bridges are not permitted here: %v", err)
	}
	_ = partRun("ip", "link", "del", br)
	if err := partRun("ip", "netns", "exec", probe, "iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"); err != nil {
		t.Skipf("partition test skipped: iptables does not work inside a network namespace here: %v", err)
	}
}

// partBuildNet creates the bridge (10.199.X.1/24) and three namespaces
// (10.199.X.2-4) on veth pairs, and removes them all at cleanup.
func partBuildNet(t *testing.T) *partNet {
	t.Helper()
	partSweepStale()
	pid := os.Getpid()
	n := &partNet{subnet: partPickSubnet(t), bridge: fmt.Sprintf("sbbr%d", pid)}
	for i := range n.ns {
		n.ns[i] = fmt.Sprintf("sbpart%d-n%d", pid, i+1)
		n.hostVeth[i] = fmt.Sprintf("sbv%dn%d", pid, i+1)
	}
	t.Cleanup(func() {
		for i := range n.ns {
			_ = partRun("ip", "netns", "del", n.ns[i])
			_ = partRun("ip", "link", "del", n.hostVeth[i]) // usually gone with its peer
		}
		_ = partRun("ip", "link", "del", n.bridge)
	})
	run := func(args ...string) {
		t.Helper()
		if err := partRun(args...); err != nil {
			t.Fatalf("harness: building the namespaces: %v", err)
		}
	}
	run("ip", "link", "add", n.bridge, "type", "bridge")
	run("ip", "addr", "add", n.hostIP()+"/24", "dev", n.bridge)
	run("ip", "link", "set", n.bridge, "up")
	for i := range n.ns {
		run("ip", "netns", "add", n.ns[i])
		run("ip", "link", "add", n.hostVeth[i], "type", "veth", "peer", "name", "eth0", "netns", n.ns[i])
		run("ip", "link", "set", n.hostVeth[i], "master", n.bridge)
		run("ip", "link", "set", n.hostVeth[i], "up")
		run("ip", "-n", n.ns[i], "addr", "add", n.nodeIP(i)+"/24", "dev", "eth0")
		run("ip", "-n", n.ns[i], "link", "set", "lo", "up")
		run("ip", "-n", n.ns[i], "link", "set", "eth0", "up")
	}
	// Every address of the run must be reached over the bridge, never the
	// default route.
	for i := range n.ns {
		out, err := exec.Command("ip", "-4", "route", "get", n.nodeIP(i)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev "+n.bridge+" ") {
			t.Fatalf("harness: %s is not routed over the bridge %s: %v %s", n.nodeIP(i), n.bridge, err, out)
		}
		out, err = exec.Command("ip", "-n", n.ns[i], "-4", "route", "get", n.hostIP()).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev eth0 ") {
			t.Fatalf("harness: inside %s, %s is not routed over eth0: %v %s", n.ns[i], n.hostIP(), err, out)
		}
	}
	return n
}

// partSweepStale removes what an earlier run, killed before its cleanup,
// left: namespaces named sbpart<pid>-n<i> and bridges sbbr<pid> whose
// process is gone.
func partSweepStale() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, "sbpart")
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidText); err == nil && !partAlive(pid) {
			_ = partRun("ip", "netns", "del", name)
		}
	}
	out, _ = exec.Command("ip", "-o", "link", "show", "type", "bridge").Output()
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name := strings.TrimSuffix(fields[1], ":")
		if rest, ok := strings.CutPrefix(name, "sbbr"); ok {
			if pid, err := strconv.Atoi(rest); err == nil && !partAlive(pid) {
				_ = partRun("ip", "link", "del", name)
			}
		}
	}
}

func partAlive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// partPickSubnet picks X for 10.199.X.0/24 from the pid, skipping subnets
// any interface or route already uses.
func partPickSubnet(t *testing.T) int {
	t.Helper()
	addrs, _ := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	routes, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	used := string(addrs) + "\n" + string(routes)
	start := os.Getpid() % 200
	for k := range 200 {
		x := 20 + (start+k)%200
		prefix := fmt.Sprintf("10.199.%d.", x)
		if !strings.Contains(used, " "+prefix) && !strings.Contains(used, "\n"+prefix) && !strings.HasPrefix(used, prefix) {
			return x
		}
	}
	t.Fatal("harness: no free 10.199.X.0/24 subnet")
	return 0
}

// cut drops, inside node 3's namespace, its traffic with etcd's ports on
// the bridge address and all traffic with nodes 1 and 2. Client traffic
// from the host (port 8765) still passes.
func (n *partNet) cut(t *testing.T, etcdPorts ...int) {
	t.Helper()
	ns := n.ns[2]
	// Heal before the nodes are stopped when the test ends early, so that
	// they shut down as usual.
	t.Cleanup(func() {
		for _, chain := range []string{"INPUT", "OUTPUT"} {
			_ = partRun("ip", "netns", "exec", ns, "iptables", "-w", "-F", chain)
		}
	})
	var rules [][]string
	for _, port := range etcdPorts {
		p := strconv.Itoa(port)
		rules = append(rules,
			[]string{"OUTPUT", "-d", n.hostIP(), "-p", "tcp", "--dport", p, "-j", "DROP"},
			[]string{"INPUT", "-s", n.hostIP(), "-p", "tcp", "--sport", p, "-j", "DROP"})
	}
	for _, peer := range []string{n.nodeIP(0), n.nodeIP(1)} {
		rules = append(rules, []string{"OUTPUT", "-d", peer, "-j", "DROP"}, []string{"INPUT", "-s", peer, "-j", "DROP"})
	}
	for _, r := range rules {
		if err := partRun(append([]string{"ip", "netns", "exec", ns, "iptables", "-w", "-A"}, r...)...); err != nil {
			t.Fatalf("harness: cutting node 3 off: %v", err)
		}
	}
}

// heal removes the rules.
func (n *partNet) heal(t *testing.T) {
	t.Helper()
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		if err := partRun("ip", "netns", "exec", n.ns[2], "iptables", "-w", "-F", chain); err != nil {
			t.Fatalf("harness: healing the partition: %v", err)
		}
	}
}

// partDialFrom opens a TCP connection to addr from inside namespace ns.
func partDialFrom(ns, addr string, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // unlocked only once back in our namespace; else the thread dies with us
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("harness: %w", err)
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- fmt.Errorf("harness: %w", err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("harness: setns %s: %v", ns, err)
			return
		}
		conn, derr := net.DialTimeout("tcp", addr, timeout)
		if conn != nil {
			conn.Close()
		}
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- derr
	}()
	return <-errc
}

// --- etcd and nodes ------------------------------------------------------

// partStartEtcd runs etcd in the test process on the bridge address.
func partStartEtcd(t *testing.T, ip string) (*cluster.EmbeddedEtcd, int, int) {
	t.Helper()
	port := func() int {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	clientPort, peerPort := port(), port()
	etcd, err := cluster.StartEmbeddedEtcd(t.TempDir(), net.JoinHostPort(ip, strconv.Itoa(clientPort)), net.JoinHostPort(ip, strconv.Itoa(peerPort)))
	if err != nil {
		t.Fatalf("harness: etcd on %s: %v", ip, err)
	}
	t.Cleanup(etcd.Stop)
	return etcd, clientPort, peerPort
}

// partStartNode runs broker node i in its namespace and waits until it listens.
func partStartNode(t *testing.T, pn *partNet, i int, etcdURL string) *server {
	t.Helper()
	ip := pn.nodeIP(i)
	return runServer(t, exec.Command("ip", "netns", "exec", pn.ns[i], brokerBinary,
		"--addr", net.JoinHostPort(ip, strconv.Itoa(partClientPort)),
		"--node-addr", net.JoinHostPort(ip, strconv.Itoa(partNodePort)),
		"--cluster-etcd", etcdURL, "--cluster-lease-ttl", "2s", "--request-timeout", "2s",
		"--rate-limit", "0", "--grain-idle-timeout", "200ms"))
}

// partExitTime is when s exited (zero while it runs).
func partExitTime(s *server) time.Time {
	select {
	case <-s.exited:
		return s.exitedAt
	default:
		return time.Time{}
	}
}

var partHTTP = &http.Client{
	Timeout:   time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// partMembers reads switchboard_cluster_members from a node's /metrics.
func partMembers(addr string) (float64, error) {
	resp, err := partHTTP.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "switchboard_cluster_members "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no switchboard_cluster_members in /metrics")
}

// partReadyLog is node 3's /readyz, sampled.
type partReadyLog struct {
	mu      sync.Mutex
	samples []partReadySample
}

type partReadySample struct {
	at   time.Time
	code int // 0: no answer
}

func (l *partReadyLog) poll(addr string, stop <-chan struct{}) {
	client := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	for {
		code := 0
		if resp, err := client.Get("http://" + addr + "/readyz"); err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
		l.mu.Lock()
		l.samples = append(l.samples, partReadySample{time.Now(), code})
		l.mu.Unlock()
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *partReadyLog) snapshot() []partReadySample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]partReadySample(nil), l.samples...)
}

// --- clients -------------------------------------------------------------

type partEvent struct {
	at      time.Time
	kind    string // published, error, message
	client  string
	node    int
	channel string
	id      string // the publication's id (acks, errors) or data id (messages)
	code    string
	offset  int64
	epoch   string
	seqAt   time.Time // a message's timestamp: when its channel sequenced it
}

type partSent struct {
	node    int
	channel string
	at      time.Time
}

// partRecorder keeps every frame the test's clients receive.
type partRecorder struct {
	mu     sync.Mutex
	events []partEvent
	sent   map[string]partSent // publication id → who sent it where, when

	epochs  map[string]string // publication id → epoch a subscriber received it in, up to events[indexed]
	indexed int
}

func newPartRecorder() *partRecorder { return &partRecorder{sent: map[string]partSent{}} }

// partClient is a connection whose frames a goroutine records.
type partClient struct {
	name        string
	node        int
	c           *client
	rec         *partRecorder
	done        chan struct{}
	outstanding atomic.Int32
	seq         int
	mu          sync.Mutex
	closed      bool
	closeCode   uint16
	closedAt    time.Time
}

func (r *partRecorder) attach(name string, node int, c *client) *partClient {
	pc := &partClient{name: name, node: node, c: c, rec: r, done: make(chan struct{})}
	go func() {
		defer close(pc.done)
		for {
			select {
			case raw := <-c.frames:
				r.record(pc, raw, time.Now())
			case <-c.closed:
				at := time.Now()
			drain:
				for {
					select {
					case raw := <-c.frames: // frames that arrived before the close
						r.record(pc, raw, at)
					default:
						break drain
					}
				}
				c.closeMu.Lock()
				code := c.code
				c.closeMu.Unlock()
				pc.mu.Lock()
				pc.closed, pc.closeCode, pc.closedAt = true, code, at
				pc.mu.Unlock()
				return
			}
		}
	}()
	return pc
}

func (pc *partClient) closeInfo() (uint16, time.Time, bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.closeCode, pc.closedAt, pc.closed
}

func (r *partRecorder) record(pc *partClient, raw []byte, at time.Time) {
	var f struct {
		Type    string          `json:"type"`
		Channel string          `json:"channel"`
		Code    string          `json:"code"`
		ID      json.RawMessage `json:"id"`
		Offset  int64           `json:"offset"`
		Epoch   string          `json:"epoch"`
		Stamp   int64           `json:"timestamp"`
		Data    struct {
			U string `json:"u"`
		} `json:"data"`
	}
	if json.Unmarshal(raw, &f) != nil {
		return
	}
	e := partEvent{at: at, kind: f.Type, client: pc.name, node: pc.node, channel: f.Channel, code: f.Code, offset: f.Offset, epoch: f.Epoch}
	switch f.Type {
	case "published", "error":
		var id string
		_ = json.Unmarshal(f.ID, &id)
		e.id = id
		if id != "" {
			pc.outstanding.Add(-1)
		}
	case "message":
		e.id = f.Data.U
		e.seqAt = time.UnixMilli(f.Stamp)
	default:
		return
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// publish sends one publication with a unique id to channel.
func (pc *partClient) publish(channel string) error {
	pc.seq++
	id := fmt.Sprintf("%s-%d", pc.name, pc.seq)
	now := time.Now()
	pc.rec.mu.Lock()
	pc.rec.sent[id] = partSent{node: pc.node, channel: channel, at: now}
	pc.rec.mu.Unlock()
	raw, _ := json.Marshal(map[string]any{"type": "message", "channel": channel, "id": id,
		"data": map[string]any{"u": id, "ms": now.UnixMilli()}})
	pc.outstanding.Add(1)
	_ = pc.c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return pc.c.conn.WriteString(string(raw))
}

// publishLoop publishes to channel every partChannels×20 ms, leaving at
// most partWindow publications unanswered, until stop, the deadline, or the
// connection ends.
func (pc *partClient) publishLoop(channel string, stop *atomic.Bool, deadline time.Time) {
	for !stop.Load() && time.Now().Before(deadline) {
		select {
		case <-pc.done:
			return
		default:
		}
		if pc.outstanding.Load() < partWindow {
			if pc.publish(channel) != nil {
				return
			}
		}
		time.Sleep(partChannels * 20 * time.Millisecond)
	}
}

func (r *partRecorder) matching(keep func(partEvent) bool) []partEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []partEvent
	for _, e := range r.events {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// firstReceipts returns, per channel, when subscriber sub first received a
// publication sent at or after since by a publisher on one of fromNodes.
func (r *partRecorder) firstReceipts(sub string, names []string, since time.Time, fromNodes ...int) map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Time{}
	for _, e := range r.events {
		if e.kind != "message" || e.client != sub {
			continue
		}
		s, ok := r.sent[e.id]
		if !ok || s.at.Before(since) || !partContains(fromNodes, s.node) {
			continue
		}
		if _, seen := out[e.channel]; !seen {
			out[e.channel] = e.at
		}
	}
	return out
}

// epochOf returns the epoch in which a subscriber received publication id.
func (r *partRecorder) epochOf(id string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.epochs == nil {
		r.epochs = map[string]string{}
	}
	for ; r.indexed < len(r.events); r.indexed++ {
		if e := r.events[r.indexed]; e.kind == "message" && e.id != "" {
			if _, ok := r.epochs[e.id]; !ok {
				r.epochs[e.id] = e.epoch
			}
		}
	}
	ep, ok := r.epochs[id]
	return ep, ok
}

// streamViolations lists, per subscriber and channel, messages whose
// offset is not above the last one of the same epoch, or whose epoch is
// one the stream had already left.
func (r *partRecorder) streamViolations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	type stream struct {
		epoch string
		last  int64
		left  map[string]bool
	}
	streams := map[string]*stream{}
	var out []string
	for _, e := range r.events {
		if e.kind != "message" {
			continue
		}
		key := e.client + " " + e.channel
		st := streams[key]
		switch {
		case st == nil:
			streams[key] = &stream{epoch: e.epoch, last: e.offset, left: map[string]bool{}}
		case e.epoch == st.epoch:
			if e.offset <= st.last {
				out = append(out, fmt.Sprintf("%s: offset %d after %d in epoch %s", key, e.offset, st.last, e.epoch))
			}
			st.last = max(st.last, e.offset)
		case st.left[e.epoch]:
			out = append(out, fmt.Sprintf("%s: back to epoch %s from %s", key, e.epoch, st.epoch))
			st.left[st.epoch], st.epoch, st.last = true, e.epoch, e.offset
		default:
			st.left[st.epoch], st.epoch, st.last = true, e.epoch, e.offset
		}
	}
	return out
}

// duplicates lists publications a subscriber received more than once, and
// (channel, epoch, offset) triples that carried different publications.
func (r *partRecorder) duplicates() (dups, clashes []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	count := map[string]int{}
	slot := map[string]string{}
	clashed := map[string]bool{}
	for _, e := range r.events {
		if e.kind != "message" || e.id == "" {
			continue
		}
		count[e.client+": "+e.id]++
		key := fmt.Sprintf("%s epoch %s offset %d", e.channel, e.epoch, e.offset)
		if prev, ok := slot[key]; ok && prev != e.id && !clashed[key] {
			clashed[key] = true
			clashes = append(clashes, fmt.Sprintf("%s: %s and %s", key, prev, e.id))
		} else if !ok {
			slot[key] = e.id
		}
	}
	for k, n := range count {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s ×%d", k, n))
		}
	}
	sort.Strings(dups)
	return dups, clashes
}

// --- small helpers -------------------------------------------------------

func partContains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// partOverlap reports whether the time spans of a and b intersect.
func partOverlap(a, b []time.Time) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	return !partMax(a).Before(partMin(b)) && !partMax(b).Before(partMin(a))
}

func partMin(ts []time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if m.IsZero() || t.Before(m) {
			m = t
		}
	}
	return m
}

func partMax(ts []time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// partSince formats t relative to ref ("never" for the zero time).
func partSince(ref, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Sub(ref).Round(10 * time.Millisecond).String()
}

// partWait polls cond until it holds or d passes.
func partWait(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// partEventually is eventually for conditions whose failure is the harness's
// or the broker's before the scenario starts.
func partEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !partWait(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}
