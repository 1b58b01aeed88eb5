package actors

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/testutil"

	sbcluster "github.com/switchboard/switchboard/cluster"
	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// The relay's per-channel subscriptions survive any order of joins and
// leaves: after each step the list a delivery walks holds exactly the
// subscribed connections, each where its index says.
func TestRelaySubscriptionsFollowJoinsAndLeaves(t *testing.T) {
	b := NewBroker(Options{}, transport.NewMetrics(), nil)
	r := newRelay(b)
	const conns = 12
	for i := range conns {
		b.local.add(&client{ID: fmt.Sprintf("c%d", i), User: "u", Outbox: newMemoryOutbox(16)}, nil, true)
	}
	want := map[string]map[string]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 3000 {
		channel := fmt.Sprintf("ch%d", rng.IntN(3))
		id := fmt.Sprintf("c%d", rng.IntN(conns))
		if want[channel] == nil {
			want[channel] = map[string]bool{}
		}
		switch rng.IntN(3) {
		case 0, 1:
			r.add(&pb.SubscriberAdded{Channel: channel, ConnectionId: id})
			want[channel][id] = true
		case 2:
			r.remove(channel, id)
			delete(want[channel], id)
		}
		for ch, ids := range want {
			var got []string
			if rc := r.channels[ch]; rc != nil {
				for i, sub := range rc.subs {
					if rc.index[sub.id] != i {
						t.Fatalf("step %d: %s index of %s is %d, it sits at %d", step, ch, sub.id, rc.index[sub.id], i)
					}
					got = append(got, sub.id)
				}
			}
			var expected []string
			for id := range ids {
				expected = append(expected, id)
			}
			sort.Strings(got)
			sort.Strings(expected)
			if fmt.Sprint(got) != fmt.Sprint(expected) {
				t.Fatalf("step %d: %s delivers to %v, want %v", step, ch, got, expected)
			}
		}
	}
}

// A relay follows one activation of a channel: it tells its subscribers
// when offsets jump or the epoch changes, drops what an activation older
// than the one it follows still sends, and tells an older activation that
// asks it that it is stale. A local activation older than one that
// announced itself stands down.
func TestRelayFollowsTheNewestActivation(t *testing.T) {
	metrics := transport.NewMetrics()
	b := NewBroker(Options{}, metrics, nil)
	b.system = actor.NewActorSystem()
	b.view.Store(&view{term: 5, self: "nonhost:0", owners: sbcluster.NewPlacement([]string{"nonhost:0"})})
	r := newRelay(b)
	b.local.add(&client{ID: "c0", User: "u", Outbox: newMemoryOutbox(64)}, nil, true)
	local := b.place(ChannelKind, "ch", actor.NewPID("nonhost:0", "ch"))
	local.served.Store(true)

	gaps := func() float64 { return testutil.ToFloat64(metrics.DeliveryGaps) }
	stale := func() float64 { return testutil.ToFloat64(metrics.StaleDeliveries) }
	delivered := func() float64 { return testutil.ToFloat64(metrics.Deliveries) }
	publish := func(term uint64, epoch string, offset uint64) {
		r.deliver(&pb.Delivery{Channel: "ch", Frame: []byte("x"), Term: term, Epoch: epoch, Offset: offset})
	}

	r.add(&pb.SubscriberAdded{Channel: "ch", ConnectionId: "c0", Term: 5, Epoch: "e1", Offset: 10})
	publish(5, "e1", 11)
	publish(5, "e1", 12)
	if gaps() != 0 || delivered() != 2 {
		t.Fatalf("in-order publications: %v gaps, %v delivered", gaps(), delivered())
	}
	publish(5, "e1", 14)
	if gaps() != 1 || delivered() != 3 {
		t.Fatalf("offset 13 went missing: %v gaps told, %v delivered; want 1 and 3", gaps(), delivered())
	}

	answer := r.announced(&pb.QueryChannelSubscribers{Channel: "ch", Term: 7})
	if answer.Stale || !answer.Predecessor || answer.PredecessorTerm != 5 || len(answer.Subscribers) != 1 || answer.Member != b.system.ID {
		t.Fatalf("a newer activation asking got %v", answer)
	}
	r.followChannel(&pb.FollowChannel{Channel: "ch", Term: 7, Epoch: "e2", Offset: 0})
	if gaps() != 2 {
		t.Fatalf("subscribers were not told of the new epoch: %v gaps", gaps())
	}
	if !local.moved.Load() {
		t.Fatal("the local activation placed under term 5 still sequences after one under term 7 announced itself")
	}
	publish(5, "e1", 15)
	if stale() != 1 || delivered() != 3 {
		t.Fatalf("a publication of the old activation: %v stale, %v delivered; want 1 and 3", stale(), delivered())
	}
	if answer := r.announced(&pb.QueryChannelSubscribers{Channel: "ch", Term: 6}); !answer.Stale {
		t.Fatal("an activation older than the one followed was not told it is stale")
	}
	publish(7, "e2", 1)
	publish(7, "e2", 2)
	if gaps() != 2 || delivered() != 5 {
		t.Fatalf("the new activation's stream: %v gaps, %v delivered; want 2 and 5", gaps(), delivered())
	}
}

// A publication that excludes a user reaches every other subscriber,
// while each of that user's connections gets a skip frame for its offset
// in the message's place, so their stream has no hole.
func TestRelaySkipsExcludedUser(t *testing.T) {
	b := NewBroker(Options{}, transport.NewMetrics(), nil)
	r := newRelay(b)
	read := map[string]func() string{}
	for _, conn := range []struct{ id, user string }{{"c0", "alice"}, {"c1", "bob"}, {"c2", "bob"}} {
		out := newMemoryOutbox(16)
		read[conn.id] = func() string {
			select {
			case f := <-out.frames:
				return payload(f)
			default:
				return "nothing"
			}
		}
		b.local.add(&client{ID: conn.id, User: conn.user, Outbox: out}, nil, true)
		r.add(&pb.SubscriberAdded{Channel: "ch", ConnectionId: conn.id, Term: 1, Epoch: "e1", Offset: 10})
	}
	message := transport.MessageFrame("ch", "", []byte(`"hi"`), 11, "e1", 1)
	r.deliver(&pb.Delivery{Channel: "ch", Frame: message, ExcludeUser: "bob", Term: 1, Epoch: "e1", Offset: 11})
	if got := read["c0"](); got != payload(message) {
		t.Fatalf("alice got %s", got)
	}
	for _, id := range []string{"c1", "c2"} {
		if got := read[id](); got != `{"type":"skip","channel":"ch","epoch":"e1","offset":11}` {
			t.Fatalf("bob's %s got %s", id, got)
		}
	}
}
