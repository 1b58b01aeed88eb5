package actors

import (
	"context"
	"testing"
	"time"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// A retry whose first attempt went unanswered is applied only by an
// activation that holds the answers of the one that attempt reached;
// otherwise it may have been sequenced there, and it is not done again.
func TestRetryAfterAnUnansweredAttempt(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	publish := func(sequence uint64, unansweredBy string) *pb.Published {
		t.Helper()
		res, err := request[*pb.Published](ctx, b, ChannelKind, "doc:1", &pb.Publish{Channel: "doc:1", Data: []byte(`1`),
			Publisher: "editor", Sequence: sequence, UnansweredBy: unansweredBy})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := publish(1, "")
	pid, _ := b.grainPID(ChannelKind, "doc:1")
	here := activationName(pid)
	if again := publish(1, here); again.Offset != first.Offset || again.OutcomeUnknown {
		t.Fatalf("a retry of an answered publication to the same activation: %v, want offset %d", again, first.Offset)
	}
	if slow := publish(2, here); slow.OutcomeUnknown || slow.Offset != first.Offset+1 {
		t.Fatalf("a retry the same activation never saw must be applied: %v", slow)
	}
	gone := publish(3, "127.0.0.1:1/partition-activator/doc:1$9")
	if !gone.OutcomeUnknown {
		t.Fatalf("a retry after an attempt that reached an activation now gone was applied: %v", gone)
	}
	if again := publish(3, "127.0.0.1:1/partition-activator/doc:1$9"); !again.OutcomeUnknown {
		t.Fatalf("the same retry again: %v", again)
	}
	if next := publish(4, ""); next.Offset != first.Offset+2 {
		t.Fatalf("the refused retry took an offset: next is %d, want %d", next.Offset, first.Offset+2)
	}
}

// A channel that passivates leaves its answers and its place behind: a
// retry of a publication it answered (the answer lost with its mailbox)
// is answered again by the next activation, and offsets go on in the same
// epoch.
func TestChannelPassivationKeepsAnswersAndOffsets(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	publish := func(sequence uint64, unansweredBy string) *pb.Published {
		t.Helper()
		res, err := request[*pb.Published](ctx, b, ChannelKind, "idle:1", &pb.Publish{Channel: "idle:1", Data: []byte(`1`),
			Publisher: "editor", Sequence: sequence, UnansweredBy: unansweredBy})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := publish(1, "")
	pid, _ := b.grainPID(ChannelKind, "idle:1")
	before := activationName(pid)
	deadline := time.Now().Add(5 * time.Second)
	for b.activeHere(ChannelKind, "idle:1") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the unused channel did not passivate")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if again := publish(1, before); again.OutcomeUnknown || again.Offset != first.Offset {
		t.Fatalf("a retry answered by the passivated activation: %v, want offset %d", again, first.Offset)
	}
	if next := publish(2, ""); next.Offset != first.Offset+1 {
		t.Fatalf("after passivation the next publication got offset %d, want %d", next.Offset, first.Offset+1)
	}
}

// Only an activation that took over and served leaves state for a
// successor: one that found itself moved at birth holds nothing of the
// channel's, and its empty state must not pass for the channel's.
func TestOnlyAServingActivationLeavesState(t *testing.T) {
	b := startBroker(t)
	born := &channel{broker: b, name: "doc:9", epoch: "fresh", placement: &placement{kind: ChannelKind, identity: "doc:9", term: 3}}
	born.stopped(b.system.Root)
	if _, held := b.handoffs.holds("doc:9", 4); held {
		t.Fatal("an activation that never served left its empty state for the channel's successor")
	}
	born.placement.served.Store(true)
	born.last = 7
	born.stopped(b.system.Root)
	if term, held := b.handoffs.holds("doc:9", 4); !held || term != 3 {
		t.Fatalf("a serving activation's state: held=%v term=%d, want held under term 3", held, term)
	}
	if state := b.handoffs.take("doc:9", 4); state == nil || state.Epoch != "fresh" || state.Offset != 7 {
		t.Fatalf("state taken over: %v", state)
	}
}
