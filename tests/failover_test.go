package tests

import (
	"fmt"
	"testing"
	"time"
)

// The owner of busy channels is killed while publishers run on the other
// nodes. Its replica, on the member ranked next, becomes the owner and
// goes on in the same epoch: every subscriber on the survivors receives
// every acknowledged publication once, in order, with no gap frame and no
// epoch change, and a client connected to the killed node recovers what
// it missed on a survivor.
func TestFailoverKeepsEveryAcknowledgedPublication(t *testing.T) {
	t.Parallel()
	failoverKeepsEveryAcknowledgedPublication(t, true)
}

// Without history too, the subscribers on the survivors miss nothing that
// was acknowledged: the replica keeps the last seconds' publications, so
// the successor sends each relay what the dead owner had not delivered.
func TestFailoverWithoutHistoryKeepsEveryAcknowledgedPublication(t *testing.T) {
	t.Parallel()
	failoverKeepsEveryAcknowledgedPublication(t, false)
}

func failoverKeepsEveryAcknowledgedPublication(t *testing.T, withHistory bool) {
	etcd := startEtcd(t)
	history := []string{"--history-size", "0"}
	if withHistory {
		history = []string{"--history-size", "2000", "--history-ttl", "5m"}
	}
	nodes := startCluster(t, etcd, 3, history...)
	prober := join(t, nodes[0], "prober")
	channels := channelsOwnedBy(t, nodes, prober, "kept", 2, 6)

	var watchers, pubs []*peer
	subscribed := map[*peer]map[string]frame{}
	for i, n := range nodes[:2] {
		w := join(t, n, fmt.Sprintf("watcher%d", i))
		subscribed[w] = w.subscribe(t, nil, channels...)
		watchers = append(watchers, w)
		pubs = append(pubs, join(t, n, fmt.Sprintf("pub%d", i)))
	}
	away := join(t, nodes[2], "away")
	awaySubscribed := away.subscribe(t, nil, channels...)

	traffic := startLoad(pubs, channels, 5*time.Millisecond, 4000)
	defer traffic.halt()
	if !within(waitTimeout, func() bool { return traffic.ackedCount() >= 100 }) {
		t.Fatalf("publications did not flow before the kill")
	}
	killedAt := time.Now()
	nodes[2].kill()
	flowing := within(20*time.Second, func() bool {
		for _, p := range traffic.ackedList() {
			if p.sent.After(killedAt.Add(time.Second)) {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond)
	traffic.halt()
	if !flowing {
		t.Fatalf("no publication acknowledged within 20s of the kill")
	}

	acked := traffic.ackedList()
	byChannel := map[string][]publication{}
	for _, p := range acked {
		byChannel[p.channel] = append(byChannel[p.channel], p)
	}
	last := map[string]int64{}
	for _, p := range acked {
		last[p.channel] = max(last[p.channel], p.offset)
	}
	within(waitTimeout, func() bool {
		for _, w := range watchers {
			for _, ch := range channels {
				got := w.messages(ch)
				if len(got) == 0 || got[len(got)-1].offset() < last[ch] {
					return false
				}
			}
		}
		return true
	})

	var probs problems
	for _, w := range watchers {
		for _, ch := range channels {
			sequence, epochs := w.stream(ch, subscribed[w][ch], &probs)
			if len(epochs) != 1 {
				probs.add("epoch changed on a survivor", "%s, %s: epochs %v", w.user, ch, epochs)
			}
			received := map[string]bool{}
			for _, s := range sequence {
				received[s] = true
			}
			for _, p := range byChannel[ch] {
				if !received[fmt.Sprintf("%d=%s", p.offset, p.data)] {
					probs.add("acknowledged publication missing on a survivor", "%s, %s: offset %d %q", w.user, ch, p.offset, p.data)
				}
			}
		}
		if gaps := w.frames("gap", ""); len(gaps) > 0 {
			probs.add("gap frame on a survivor", "%s: %d gap frames, first %v", w.user, len(gaps), gaps[0])
		}
	}
	if traffic.unknown > 0 {
		probs.add("outcome_unknown although the replica holds every answer", "%d publications", traffic.unknown)
	}
	traffic.unanswered(&probs)
	if !withHistory {
		t.Logf("%d acknowledged publications on %d channels owned by the killed node; %d answered unavailable, %s",
			len(acked), len(channels), traffic.unavailable, traffic.latency())
		probs.report(t)
		return
	}

	// The client that was on the killed node recovers on a survivor.
	back := join(t, nodes[0], "away")
	recovered := 0
	for _, ch := range channels {
		seen := away.messages(ch)
		from := awaySubscribed[ch]
		if len(seen) > 0 {
			from = seen[len(seen)-1]
		}
		sub := back.subscribe(t, map[string]any{"recover": map[string]any{"offset": from.offset(), "epoch": from.epoch()}}, ch)[ch]
		if sub.m["recovered"] != true {
			probs.add("reconnecting client not recovered", "%s from offset %d of %s: %v", ch, from.offset(), from.epoch(), sub)
			continue
		}
		recovered++
		within(waitTimeout, func() bool {
			got := back.messages(ch)
			return int64(len(got)) >= last[ch]-from.offset()
		})
		sequence, _ := back.stream(ch, from, &probs)
		if int64(len(sequence)) != last[ch]-from.offset() {
			probs.add("recovered backlog incomplete", "%s: %d publications after offset %d, want %d", ch, len(sequence), from.offset(), last[ch]-from.offset())
		}
	}
	t.Logf("%d acknowledged publications on %d channels owned by the killed node; %d answered unavailable, %s; %d of %d channels recovered by the client that was on it",
		len(acked), len(channels), traffic.unavailable, traffic.latency(), recovered, len(channels))
	probs.report(t)
}

// A node stopped gracefully closes its clients only once the publications
// they have in flight are answered: nothing a subscriber received goes
// unacknowledged to its publisher (who would otherwise publish it again
// on its next connection).
func TestGracefulStopLosesNoAcknowledgement(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3, "--rate-limit", "0")
	channels := names("acked", 12)
	watcher := join(t, nodes[0], "watcher")
	watcher.subscribe(t, nil, channels...)
	publisher := join(t, nodes[2], "publisher")

	sent := map[string]string{} // data → id
	stopping := make(chan struct{})
	go func() {
		defer close(stopping)
		time.Sleep(300 * time.Millisecond)
		nodes[2].stop()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 20000 && !publisher.isClosed() && time.Now().Before(deadline); i++ {
		data := fmt.Sprintf("p#%d", i)
		id, err := publisher.ask(map[string]any{"type": "message", "channel": channels[i%len(channels)], "data": data})
		if err != nil {
			break
		}
		sent[data] = id
		if i%4 == 3 {
			time.Sleep(time.Millisecond) // pipelined, four at a time
		}
	}
	<-stopping
	if code, ok := publisher.closeCode(waitTimeout); !ok || code != 1012 {
		t.Fatalf("the publisher's connection closed with %d (closed: %v), want 1012", code, ok)
	}

	// Whatever was acknowledged reaches the watcher; so does whatever
	// else was applied, alongside.
	var acked []string
	for data, id := range sent {
		if f, ok := publisher.reply(id, 0); ok && f.typ() == "published" {
			acked = append(acked, data)
		}
	}
	within(waitTimeout, func() bool {
		seen := map[string]bool{}
		for _, m := range watcher.messages("") {
			seen[m.data()] = true
		}
		for _, data := range acked {
			if !seen[data] {
				return false
			}
		}
		return true
	})
	var probs problems
	received := 0
	for _, m := range watcher.frames("message", "") {
		id, ours := sent[m.data()]
		if !ours {
			continue
		}
		received++
		if f, answered := publisher.reply(id, 0); !answered || f.typ() != "published" {
			probs.add("delivered but not acknowledged", "%s (%s): answer %v", m.data(), id, f)
		}
	}
	if received == 0 {
		t.Fatalf("no publication reached the watcher before the stop")
	}
	t.Logf("%d publications sent, %d delivered, each checked for its acknowledgement", len(sent), received)
	probs.report(t)
}

// When a presence channel's owner dies, its successor knows from the
// replica who was present: the users who were connected only to the dead
// node leave, and those still connected see neither a leave nor a join.
func TestPresenceAfterFailover(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 3)
	prober := join(t, nodes[0], "prober")
	channel := channelsOwnedBy(t, nodes, prober, "lobby:fo", 2, 1)[0]
	presence := map[string]any{"presence": true}
	alice := join(t, nodes[0], "alice")
	alice.subscribe(t, presence, channel)
	bob := join(t, nodes[1], "bob")
	bob.subscribe(t, presence, channel)
	carol := join(t, nodes[2], "carol")
	carol.subscribe(t, presence, channel)
	events := func(p *peer) []string {
		var out []string
		for _, f := range p.frames("", channel) {
			switch f.typ() {
			case "join", "leave":
				out = append(out, f.typ()+" "+f.m["user"].(string))
			case "presence_batch":
				for _, e := range f.m["events"].([]any) {
					event := e.(map[string]any)
					out = append(out, event["type"].(string)+" "+event["user"].(string))
				}
			}
		}
		return out
	}
	if !within(waitTimeout, func() bool { return len(events(alice)) == 3 }) {
		t.Fatalf("before the kill alice saw %v, want the three joins", events(alice))
	}

	before := map[*peer]int{alice: len(events(alice))}
	within(time.Second, func() bool { return len(events(bob)) >= 2 }) // bob arrived after alice
	before[bob] = len(events(bob))
	nodes[2].kill()
	if !within(waitTimeout, func() bool { return len(events(alice)) > 3 }) {
		t.Fatalf("after the owner died alice saw %v: no leave for carol", events(alice))
	}
	within(time.Second, func() bool { return false }) // anything spurious would follow at once
	for _, p := range []*peer{alice, bob} {
		if got := events(p)[before[p]:]; len(got) != 1 || got[0] != "leave carol" {
			t.Errorf("%s saw %v after the owner died, want only carol leaving", p.user, got)
		}
	}
	f := alice.call(t, map[string]any{"type": "presence", "channel": channel}, waitTimeout)
	var users []string
	for _, u := range f.m["users"].([]any) {
		users = append(users, u.(map[string]any)["user"].(string))
	}
	if fmt.Sprint(users) != "[alice bob]" {
		t.Fatalf("presence after the failover: %v, want [alice bob]", users)
	}
}
