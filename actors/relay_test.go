package actors

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"testing"

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
		server, client := net.Pipe()
		t.Cleanup(func() { server.Close(); client.Close() })
		out := transport.NewOutbox(server, fmt.Sprintf("c%d", i), "u", transport.OutboxLimits{MaxFrames: 1 << 20, MaxBytes: 1 << 30}, nil, nil, nil)
		b.local.add(out, nil, true)
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
