package actors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// replicatedChannel starts two members that keep one replica and names a
// channel that b owns, so its replica is on a.
func replicatedChannel(t *testing.T, prefix string) (a, b *Broker, name string) {
	t.Helper()
	if raceEnabled {
		t.Skip("protoactor's internal races between two members in one process; tests/run runs this without -race")
	}
	etcd := startEtcd(t)
	a, b = startMember(t, etcd, 1), startMember(t, etcd, 1)
	waitForMembers(t, 2, a, b)
	return a, b, channelOwnedBy(b, prefix)
}

// channelOwnedBy is the first channel prefix:N that b owns.
func channelOwnedBy(b *Broker, prefix string) string {
	for i := 0; ; i++ {
		if name := fmt.Sprintf("%s:%d", prefix, i); b.view.Load().owns(ChannelKind, name) {
			return name
		}
	}
}

// inbox is an actor that keeps what it is sent, for a test to wait on.
type inbox struct {
	mu       sync.Mutex
	received []any
	marks    int
	changed  chan struct{}
}

type inboxMark struct{}

func newInbox(t *testing.T, b *Broker) (*inbox, *actor.PID) {
	in := &inbox{changed: make(chan struct{}, 1)}
	pid := b.system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		in.mu.Lock()
		switch msg := ctx.Message().(type) {
		case *pb.Published, *pb.ReplicaAck, *pb.History, *pb.Moved:
			in.received = append(in.received, msg)
		case inboxMark:
			in.marks++
		}
		in.mu.Unlock()
		select {
		case in.changed <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(func() { b.system.Root.Stop(pid) })
	return in, pid
}

// waitFor waits until what the inbox received satisfies done.
func (in *inbox) waitFor(t *testing.T, what string, done func([]any) bool) []any {
	t.Helper()
	return in.waitUntil(t, what, func(got []any, _ int) bool { return done(got) })
}

func (in *inbox) waitUntil(t *testing.T, what string, done func(got []any, marks int) bool) []any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		in.mu.Lock()
		got, marks := append([]any(nil), in.received...), in.marks
		in.mu.Unlock()
		if done(got, marks) {
			return got
		}
		select {
		case <-in.changed:
		case <-deadline:
			t.Fatalf("waiting for %s; received %v", what, got)
		}
	}
}

// settled returns all the inbox received before a mark sent now: its
// mailbox keeps order, so nothing sent to it earlier arrives later.
func (in *inbox) settled(t *testing.T, b *Broker, pid *actor.PID) []any {
	t.Helper()
	in.mu.Lock()
	marks := in.marks
	in.mu.Unlock()
	b.system.Root.Send(pid, inboxMark{})
	return in.waitUntil(t, "the mark", func(_ []any, now int) bool { return now > marks })
}

func answersIn(got []any) []*pb.Published {
	var answers []*pb.Published
	for _, m := range got {
		if p, ok := m.(*pb.Published); ok {
			answers = append(answers, p)
		}
	}
	return answers
}

// A replica answers the publishers an update names as soon as its copy
// holds their publications, and tells the activation whom it answered; an
// update it refuses answers nobody, so the activation answers them.
func TestReplicaAnswersThePublishersOfWhatItHolds(t *testing.T) {
	b := startBroker(t)
	publisher, publisherPID := newInbox(t, b)
	owner, ownerPID := newInbox(t, b)
	self := b.system.Address()
	update := func(term uint64, whole *pb.ChannelState, offsets ...uint64) *pb.ReplicaUpdate {
		u := &pb.ReplicaUpdate{Channel: "doc:1", Term: term, Epoch: "e1", Whole: whole, OwnerActor: ownerPID.Id}
		for _, offset := range offsets {
			u.Publications = append(u.Publications, &pb.ChannelState_Stored{Offset: offset, Frame: []byte("{}")})
			u.Answered = append(u.Answered, &pb.ChannelState_Answered{Publisher: "p", Sequence: offset, Offset: offset})
			u.Replies = append(u.Replies, &pb.ReplicaUpdate_Reply{Answered: uint32(len(u.Answered) - 1),
				Address: publisherPID.Address, Actor: publisherPID.Id})
		}
		return u
	}
	send := func(u *pb.ReplicaUpdate) *pb.ReplicaAck {
		t.Helper()
		before := len(owner.settled(t, b, ownerPID))
		b.system.Root.Send(b.replicaRouter, &pb.ReplicaUpdates{From: self, Updates: []*pb.ReplicaUpdate{u}})
		got := owner.waitFor(t, "the confirmation", func(got []any) bool { return len(got) > before })
		return got[before].(*pb.ReplicaAck)
	}

	ack := send(update(2, &pb.ChannelState{Found: true, Epoch: "e1"}, 1, 2, 3))
	if ack.Resync || ack.Stale || ack.Offset != 3 || ack.RepliedFrom != 1 || ack.RepliedThrough != 3 {
		t.Fatalf("confirmation of publications 1-3: %v; want offset 3, replied 1 to 3", ack)
	}
	answers := answersIn(publisher.settled(t, b, publisherPID))
	if len(answers) != 3 {
		t.Fatalf("the publisher got %d answers, want 3: %v", len(answers), answers)
	}
	for i, a := range answers {
		if a.Offset != uint64(i+1) || a.Sequence != uint64(i+1) {
			t.Fatalf("answer %d: %v; want offset and sequence %d", i, a, i+1)
		}
	}

	for _, refused := range []struct {
		name   string
		update *pb.ReplicaUpdate
	}{
		{"a gap before the publication", update(2, nil, 5)},
		{"an older activation", update(1, nil, 4)},
		{"another epoch", func() *pb.ReplicaUpdate { u := update(2, nil, 4); u.Epoch = "e0"; return u }()},
	} {
		ack := send(refused.update)
		if !ack.Resync && !ack.Stale || ack.RepliedFrom != 0 || ack.RepliedThrough != 0 {
			t.Fatalf("%s: confirmation %v; want it refused, nobody answered", refused.name, ack)
		}
		if answers := answersIn(publisher.settled(t, b, publisherPID)); len(answers) != 3 {
			t.Fatalf("%s: the replica answered a publication it does not hold: %v", refused.name, answers[3:])
		}
	}
}

// Each publisher is answered exactly once, by the replica while it keeps
// up and by the channel when the replica lost its copy and had to be sent
// the whole state again.
func TestEveryPublisherIsAnsweredOnceAcrossAReplicaResync(t *testing.T) {
	a, _, name := replicatedChannel(t, "doc")
	// A subscriber on a: the channel's deliveries to it and any answers it
	// sends the publisher travel one stream from b to a, in order.
	subscriber := openPeer(t, a, "c1", "reader")
	subscriber.expect("welcome")
	subscriber.inbound.Command(&pb.ClientCommand{Kind: pb.ClientCommand_KIND_SUBSCRIBE, Channel: name})
	subscriber.expect("subscribed")
	if _, err := a.Publish(context.Background(), name, []byte(`"first"`), ""); err != nil {
		t.Fatal(err) // offset 1; the replica on a holds the channel from now on
	}
	pid, err := a.grainPID(ChannelKind, name)
	if err != nil {
		t.Fatal(err)
	}
	publisher, publisherPID := newInbox(t, a)
	const publications = 40
	publish := func(from, to uint64) {
		for seq := from; seq <= to; seq++ {
			a.system.Root.RequestWithCustomSender(pid, &pb.Publish{Channel: name, User: "u", Data: []byte(`"x"`),
				Publisher: "probe", Sequence: seq}, publisherPID)
		}
		publisher.waitFor(t, "the answers", func(got []any) bool { return len(answersIn(got)) >= int(to) })
	}
	publish(1, publications/2)
	a.replicas.drop(name, math.MaxUint64)
	publish(publications/2+1, publications)
	// Once the subscriber has a later publication, the channel has sent
	// every answer it was going to send for these.
	last, err := a.Publish(context.Background(), name, []byte(`"last"`), "")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if m := subscriber.expect("message"); m["offset"] == float64(last) {
			break
		}
	}
	answers := answersIn(publisher.settled(t, a, publisherPID))
	if len(answers) != publications {
		t.Fatalf("%d answers for %d publications", len(answers), publications)
	}
	seen := map[uint64]uint64{}
	for _, answer := range answers {
		seen[answer.Sequence] = answer.Offset
	}
	for seq := uint64(1); seq <= publications; seq++ {
		if offset, ok := seen[seq]; !ok || offset != seq+1 {
			t.Fatalf("publication %d: answered %v with offset %d, want offset %d", seq, ok, offset, seq+1)
		}
	}
}

// A copy handed to the channel's successor refuses, from then on, updates
// still on their way from the activation it was kept for: they answer
// nobody, so no publication the successor never saw is reported
// published. An activation older than the one that took the copy gets
// nothing.
func TestAHandedOverCopyRefusesItsFormerActivation(t *testing.T) {
	b := startBroker(t)
	publisher, publisherPID := newInbox(t, b)
	owner, ownerPID := newInbox(t, b)
	update := func(term uint64, whole *pb.ChannelState, offset uint64) *pb.ReplicaUpdate {
		u := &pb.ReplicaUpdate{Channel: "doc:1", Term: term, Epoch: "e1", Whole: whole, OwnerActor: ownerPID.Id}
		if offset > 0 {
			u.Publications = []*pb.ChannelState_Stored{{Offset: offset, Frame: []byte("{}")}}
			u.Answered = []*pb.ChannelState_Answered{{Publisher: "p", Sequence: offset, Offset: offset}}
			u.Replies = []*pb.ReplicaUpdate_Reply{{Answered: 0, Address: publisherPID.Address, Actor: publisherPID.Id}}
		}
		return u
	}
	send := func(u *pb.ReplicaUpdate) *pb.ReplicaAck {
		t.Helper()
		before := len(owner.settled(t, b, ownerPID))
		b.system.Root.Send(b.replicaRouter, &pb.ReplicaUpdates{From: b.system.Address(), Updates: []*pb.ReplicaUpdate{u}})
		got := owner.waitFor(t, "the confirmation", func(got []any) bool { return len(got) > before })
		return got[before].(*pb.ReplicaAck)
	}
	if ack := send(update(3, &pb.ChannelState{Found: true, Epoch: "e1"}, 1)); ack.Resync || ack.Stale || ack.Offset != 1 {
		t.Fatalf("first publication: %v", ack)
	}
	if state := b.replicas.handOver("doc:1", 2); state.Found {
		t.Fatalf("an activation older than the copy's got it: %v", state)
	}
	state := b.replicas.handOver("doc:1", 5)
	if !state.Found || state.Offset != 1 || state.Epoch != "e1" {
		t.Fatalf("the successor got %v; want epoch e1 at offset 1", state)
	}
	if again := b.replicas.handOver("doc:1", 5); !again.Found || again.Offset != 1 {
		t.Fatalf("the successor asking again got %v", again) // its first answer may be lost
	}
	if ack := send(update(3, nil, 2)); !ack.Stale || ack.RepliedThrough != 0 {
		t.Fatalf("a late update of the former activation: %v; want it refused as stale", ack)
	}
	if answers := answersIn(publisher.settled(t, b, publisherPID)); len(answers) != 1 {
		t.Fatalf("the publisher got %d answers, want only the first: %v", len(answers), answers)
	}
	if state := b.replicas.handOver("doc:1", 4); state.Found {
		t.Fatalf("an activation older than the one that took the copy got it: %v", state)
	}
	// It keeps the term it was replicated under, so a copy the successor
	// replicates elsewhere (of its own, newer term) is preferred to it.
	if term, offset, ok := b.replicas.standing("doc:1"); !ok || term != 3 || offset != 1 {
		t.Fatalf("the copy stands at term %d offset %d (kept: %v); want term 3, offset 1", term, offset, ok)
	}
}

// A history request that arrives while publications sequenced before it
// wait for the replica is answered once they are delivered, and holds
// them: the replica may have answered their publishers already. So is a
// compare-and-publish refused with the channel's last offset: until the
// replica holds that publication, a failover could give its offset to
// other content.
func TestAnswersNamingOffsetsWaitForThePublicationsBeforeThem(t *testing.T) {
	a, b, name := replicatedChannel(t, "history")
	if _, err := b.Publish(context.Background(), name, []byte(`"first"`), ""); err != nil {
		t.Fatal(err)
	}
	updates := holdConfirmations(t, a)
	pid, err := b.grainPID(ChannelKind, name)
	if err != nil {
		t.Fatal(err)
	}
	asker, askerPID := newInbox(t, b)
	b.system.Root.RequestWithCustomSender(pid, &pb.Publish{Channel: name, User: "u", Data: []byte(`"second"`), Publisher: "p", Sequence: 1}, askerPID)
	b.system.Root.RequestWithCustomSender(pid, &pb.QueryHistory{Channel: name}, askerPID)
	// An editor that saw only "first" expects offset 1.
	b.system.Root.RequestWithCustomSender(pid, &pb.Publish{Channel: name, User: "u", Data: []byte(`"edit"`), Publisher: "p", Sequence: 2,
		HasExpectOffset: true, ExpectOffset: 1}, askerPID)
	// The channel reads its mailbox in order: once a later question is
	// answered, the requests before it have been read.
	if _, err := b.system.Root.RequestFuture(pid, &pb.QueryPresence{}, 10*time.Second).Result(); err != nil {
		t.Fatal(err)
	}
	var update *pb.ReplicaUpdate
	deadline := time.Now().Add(10 * time.Second)
	for update == nil {
		for _, u := range updates() {
			if len(u.Publications) > 0 {
				update = u
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the channel sent the replica no update")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := asker.settled(t, b, askerPID); len(got) != 0 {
		t.Fatalf("answered before the replica confirmed: %v", got)
	}
	offset := update.Publications[0].Offset
	b.system.Root.Send(pid, &pb.ReplicaAck{Channel: name, Term: update.Term, Replica: a.system.Address(), Offset: offset})
	got := asker.waitFor(t, "the answers", func(got []any) bool { return len(got) == 3 })
	answer, ok := got[0].(*pb.Published)
	if !ok || answer.Offset != offset {
		t.Fatalf("first answer %v; want published at offset %d", got[0], offset)
	}
	res, ok := got[1].(*pb.History)
	if !ok || res.Offset != offset || len(res.Frames) == 0 || !strings.Contains(string(res.Frames[len(res.Frames)-1]), "second") {
		t.Fatalf("history %v; want it to end with the publication at offset %d", got[1], offset)
	}
	if refused, ok := got[2].(*pb.Published); !ok || !refused.Mismatch || refused.Offset != offset {
		t.Fatalf("the compare-and-publish expecting offset 1 was answered %v; want a mismatch naming offset %d", got[2], offset)
	}
}

// A member left alone takes the channel over from the copy it kept and
// goes on in the same epoch; with nobody to replicate to, it drops that
// copy at once rather than keeping a second history until a member joins.
func TestALoneSuccessorDropsTheCopyItTookOver(t *testing.T) {
	if raceEnabled {
		t.Skip("protoactor's internal races between two members in one process; tests/run runs this without -race")
	}
	etcd := startEtcd(t)
	a := startMember(t, etcd, 1)
	b, stopB := startStoppableMember(t, etcd, 1)
	waitForMembers(t, 2, a, b)
	name := channelOwnedBy(b, "alone") // so its replica is on a
	ctx := context.Background()
	for n := range 3 {
		if offset, err := a.Publish(ctx, name, []byte(fmt.Sprint(n)), ""); err != nil || offset != uint64(n+1) {
			t.Fatalf("publish %d: offset %d, %v", n, offset, err)
		}
	}
	if _, offset, ok := a.replicas.standing(name); !ok || offset != 3 {
		t.Fatalf("a's copy stands at %d (kept: %v); want 3", offset, ok)
	}
	stopB()
	waitForMembers(t, 1, a)
	if offset, err := a.Publish(ctx, name, []byte(`"alone"`), ""); err != nil || offset != 4 {
		t.Fatalf("publish on the lone member: offset %d, %v; want 4, the epoch going on", offset, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, kept := a.replicas.standing(name); !kept {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lone member still keeps the copy it took the channel over from")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Updates from a member this node saw leave are refused as stale, and
// answer nobody: its channels have successors, which may have taken (and
// dropped) the copies those updates would recreate. A member not seen yet
// (one that just joined) is trusted.
func TestAReplicaRefusesUpdatesFromADepartedMember(t *testing.T) {
	b := startBroker(t)
	publisher, publisherPID := newInbox(t, b)
	owner, ownerPID := newInbox(t, b)
	b.departed.add("member-that-left")
	update := func(channel string) *pb.ReplicaUpdate {
		return &pb.ReplicaUpdate{Channel: channel, Term: 1, Epoch: "e1", OwnerActor: ownerPID.Id,
			Whole:        &pb.ChannelState{Found: true, Epoch: "e1"},
			Publications: []*pb.ChannelState_Stored{{Offset: 1, Frame: []byte("{}")}},
			Answered:     []*pb.ChannelState_Answered{{Publisher: "p", Sequence: 1, Offset: 1}},
			Replies:      []*pb.ReplicaUpdate_Reply{{Answered: 0, Address: publisherPID.Address, Actor: publisherPID.Id}}}
	}
	for _, tc := range []struct {
		member string
		kept   bool
	}{{"member-that-left", false}, {"member-just-joined", true}} {
		channel := "doc:" + tc.member
		before := len(owner.settled(t, b, ownerPID))
		b.system.Root.Send(b.replicaRouter, &pb.ReplicaUpdates{From: b.system.Address(), FromMember: tc.member,
			Updates: []*pb.ReplicaUpdate{update(channel)}})
		got := owner.waitFor(t, "the confirmation", func(got []any) bool { return len(got) > before })
		ack := got[before].(*pb.ReplicaAck)
		answers := answersIn(publisher.settled(t, b, publisherPID))
		_, _, kept := b.replicas.standing(channel)
		if tc.kept && (ack.Stale || ack.Offset != 1 || len(answers) != 1 || !kept) {
			t.Fatalf("from %s: confirmation %v, %d answers, copy kept %v; want it held and answered", tc.member, ack, len(answers), kept)
		}
		if !tc.kept && (!ack.Stale || len(answers) != 0 || kept) {
			t.Fatalf("from %s: confirmation %v, %d answers, copy kept %v; want it refused as stale", tc.member, ack, len(answers), kept)
		}
	}
}

// holdConfirmations replaces b's replica actor by one that keeps the
// updates it is sent and confirms nothing; it returns them so far.
func holdConfirmations(t *testing.T, b *Broker) func() []*pb.ReplicaUpdate {
	t.Helper()
	b.system.Root.StopFuture(b.replicaRouter).Wait()
	var mu sync.Mutex
	var updates []*pb.ReplicaUpdate
	if _, err := b.system.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
		if batch, ok := ctx.Message().(*pb.ReplicaUpdates); ok {
			mu.Lock()
			updates = append(updates, batch.Updates...)
			mu.Unlock()
		}
	}), replicaName); err != nil {
		t.Fatal(err)
	}
	return func() []*pb.ReplicaUpdate {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(updates)
	}
}

// A publication its channel sequenced but its replica never confirmed is
// answered outcome_unknown once the request times out, not unavailable:
// it may yet be delivered, and a client that retried an "unavailable"
// publication would publish it twice. The Go API says the same.
func TestAnUnconfirmedPublicationIsAnsweredOutcomeUnknown(t *testing.T) {
	a, b, name := replicatedChannel(t, "unconfirmed")
	if _, err := b.Publish(context.Background(), name, []byte(`"first"`), ""); err != nil {
		t.Fatal(err)
	}
	holdConfirmations(t, a)
	writer := openPeer(t, b, "c1", "writer")
	writer.expect("welcome")
	writer.inbound.Command(&pb.ClientCommand{Kind: pb.ClientCommand_KIND_PUBLISH, Channel: name, Data: []byte(`"second"`), Id: []byte(`7`)})
	if m := writer.expect("error"); m["code"] != transport.CodeOutcomeUnknown || m["id"] != float64(7) {
		t.Fatalf("a publication the replica never confirmed was answered %v; want outcome_unknown", m)
	}
	if _, err := b.Publish(context.Background(), name, []byte(`"third"`), ""); !errors.Is(err, transport.ErrOutcomeUnknown) {
		t.Fatalf("the Go API publishing what the replica never confirms: %v; want ErrOutcomeUnknown", err)
	}
}

// An activation that stops while a publication waits for its replica tells
// the publisher that it sequenced it: the retry then says so, and is
// answered by the successor that holds its answer, or outcome_unknown,
// never "unavailable, try again".
func TestAStoppingActivationSaysWhatItSequenced(t *testing.T) {
	a, b, name := replicatedChannel(t, "stopping")
	if _, err := b.Publish(context.Background(), name, []byte(`"first"`), ""); err != nil {
		t.Fatal(err)
	}
	holdConfirmations(t, a)
	pid, err := b.grainPID(ChannelKind, name)
	if err != nil {
		t.Fatal(err)
	}
	publisher, publisherPID := newInbox(t, b)
	b.system.Root.RequestWithCustomSender(pid, &pb.Publish{Channel: name, User: "u", Data: []byte(`"second"`), Publisher: "p", Sequence: 9}, publisherPID)
	if _, err := b.system.Root.RequestFuture(pid, &pb.QueryPresence{}, 10*time.Second).Result(); err != nil {
		t.Fatal(err) // the publication was read, and waits for the replica
	}
	b.system.Root.Stop(pid)
	got := publisher.waitFor(t, "an answer", func(got []any) bool { return len(got) > 0 })
	if moved, ok := got[0].(*pb.Moved); !ok || !moved.Sequenced || moved.Sequence != 9 {
		t.Fatalf("the stopping activation answered %v; want Moved for sequence 9, sequenced", got[0])
	}
}
