package actors

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

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
		case *pb.Published, *pb.ReplicaAck:
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
	if raceEnabled {
		t.Skip("protoactor's internal races between two members in one process; tests/run runs this without -race")
	}
	etcd := startEtcd(t)
	a, b := startMember(t, etcd, 1), startMember(t, etcd, 1)
	waitForMembers(t, 2, a, b)
	name := ""
	for i := 0; name == ""; i++ {
		if candidate := fmt.Sprintf("doc:%d", i); b.view.Load().owns(ChannelKind, candidate) {
			name = candidate // owned by b, so its replica is on a
		}
	}
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
