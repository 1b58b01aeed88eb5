package actors

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard/switchboard/cluster"
	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// startMember starts a broker as a member of the cluster in etcd, inside
// this process, keeping replicas of its channels on that many others.
func startMember(t testing.TB, etcd string, replicas int) *Broker {
	t.Helper()
	b, _ := startStoppableMember(t, etcd, replicas)
	return b
}

// startStoppableMember is startMember, with a function that stops the
// member as a crash would, but for leaving etcd at once.
func startStoppableMember(t testing.TB, etcd string, replicas int) (*Broker, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	history := ChannelOptions{HistorySize: 100, HistoryTTL: time.Minute}
	b := NewBroker(Options{RequestTimeout: 2 * time.Second, GrainIdleTimeout: time.Minute, Namespaces: Namespaces{Default: history},
		ChannelReplicas: replicas}, transport.NewMetrics(), log)
	node, err := cluster.Start(cluster.Config{Name: "test", NodeAddr: "127.0.0.1:0", EtcdEndpoints: []string{etcd},
		LeaseTTL: 2 * time.Second, RequestTimeout: 2 * time.Second, Log: log, LogLevel: slog.LevelError,
		BeforeJoin: func(n *cluster.Node) error { return b.Start(n.Cluster, n) }}, b.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceFunc(node.Stop)
	t.Cleanup(stop)
	return b, stop
}

// startEtcd starts an embedded etcd for this test and returns its endpoint.
func startEtcd(t testing.TB) string {
	t.Helper()
	etcd, err := cluster.StartEmbeddedEtcd(t.TempDir(), loopbackAddr(t), loopbackAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)
	return etcd.Endpoint
}

// waitForMembers waits until every broker counts n members.
func waitForMembers(t testing.TB, n int, brokers ...*Broker) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, b := range brokers {
		for len(b.view.Load().members) != n {
			if time.Now().After(deadline) {
				t.Fatalf("the members did not see each other: %d of %d", len(b.view.Load().members), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func loopbackAddr(t testing.TB) string {
	addr, err := cluster.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// When a member joins, the channels it now owns move to it with their
// state: the old activation stands down (answers Moved, sequences nothing
// more) and the new one continues the epoch, offsets and history; no
// channel has two sequencers.
func TestChannelsMoveToAJoiningMemberWithTheirState(t *testing.T) {
	if raceEnabled {
		// Two protoactor members in one process trip protoactor's own data
		// races (its gossip reads the block list its member list writes);
		// tests/run runs this test without -race, and the real-process
		// cluster tests, which tell those races from ours, with it.
		t.Skip("protoactor's internal races between two members in one process; run without -race")
	}
	etcd := startEtcd(t)
	ctx := context.Background()
	a := startMember(t, etcd, 0)
	const channels = 12
	epochs := map[string]string{}
	for i := range channels {
		name := fmt.Sprintf("doc:%d", i)
		for n := range 3 {
			if offset, err := a.Publish(ctx, name, []byte(fmt.Sprint(n)), ""); err != nil || offset != uint64(n+1) {
				t.Fatalf("publish to %s on one member: %d, %v", name, offset, err)
			}
		}
		res, err := request[*pb.History](ctx, a, ChannelKind, name, &pb.QueryHistory{})
		if err != nil {
			t.Fatal(err)
		}
		epochs[name] = res.Epoch
	}

	b := startMember(t, etcd, 0)
	waitForMembers(t, 2, a, b)
	moved := 0
	for i := range channels {
		name := fmt.Sprintf("doc:%d", i)
		if b.view.Load().owns(ChannelKind, name) {
			moved++
		}
		// Through either member, the channel goes on where it stood.
		via := []*Broker{a, b}[i%2]
		if offset, err := via.Publish(ctx, name, []byte(`"after the join"`), ""); err != nil || offset != 4 {
			t.Fatalf("publish to %s after the join: offset %d, %v; want 4", name, offset, err)
		}
		res, err := request[*pb.History](ctx, b, ChannelKind, name, &pb.QueryHistory{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Epoch != epochs[name] || res.Offset != 4 || len(res.Frames) != 4 {
			t.Fatalf("%s after the join: epoch %s (was %s), offset %d, %d stored; want the same epoch, 4 and 4",
				name, res.Epoch, epochs[name], res.Offset, len(res.Frames))
		}
		if b.view.Load().owns(ChannelKind, name) {
			if p := a.activeHere(ChannelKind, name); p != nil && !p.moved.Load() {
				t.Fatalf("%s moved to the new member, but its old activation still sequences", name)
			}
		}
	}
	if moved == 0 {
		t.Fatalf("none of %d channels moved to the new member; the test proves nothing", channels)
	}
	t.Logf("%d of %d channels moved with their epoch and history", moved, channels)
}

// A channel that moves to a joining member stops on its old member soon
// after, rather than lingering there moved: when the new member leaves
// again, the channel comes back and serves on the old member, in the same
// epoch, from the replica the departed member kept there.
func TestAChannelThatMovesAwayAndBackServesAgain(t *testing.T) {
	if raceEnabled {
		t.Skip("protoactor's internal races between two members in one process; tests/run runs this without -race")
	}
	etcd := startEtcd(t)
	ctx := context.Background()
	a := startMember(t, etcd, 1)
	const channels = 32
	for i := range channels {
		if _, err := a.Publish(ctx, fmt.Sprintf("lobby:%d", i), []byte(`"before"`), ""); err != nil {
			t.Fatal(err)
		}
	}
	b, stopB := startStoppableMember(t, etcd, 1)
	waitForMembers(t, 2, a, b)
	name := ""
	for i := range channels {
		if candidate := fmt.Sprintf("lobby:%d", i); name == "" && b.view.Load().owns(ChannelKind, candidate) {
			name = candidate
		}
	}
	if name == "" {
		t.Fatalf("none of the %d channels moved to the new member; the test proves nothing", channels)
	}
	deadline := time.Now().Add(10 * time.Second)
	// Nothing asks for the channel meanwhile: the member list alone moves it.
	for a.activeHere(ChannelKind, name) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("%s moved away, but its old activation is still there after 10 s", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before, err := request[*pb.History](ctx, b, ChannelKind, name, &pb.QueryHistory{})
	if err != nil || before.Offset != 1 {
		t.Fatalf("%s on its new member: %v, %v; want its offset 1", name, before, err)
	}
	for {
		if _, offset, ok := a.replicas.standing(name); ok && offset == 1 {
			break // the new member's copy is kept here
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the new member kept no copy here", name)
		}
		time.Sleep(20 * time.Millisecond)
	}

	stopB()
	waitForMembers(t, 1, a)
	if offset, err := a.Publish(ctx, name, []byte(`"back"`), ""); err != nil || offset != 2 {
		t.Fatalf("publish to %s once it is back: offset %d, %v; want 2", name, offset, err)
	}
	after, err := request[*pb.History](ctx, a, ChannelKind, name, &pb.QueryHistory{})
	if err != nil || after.Epoch != before.Epoch || len(after.Frames) != 2 {
		t.Fatalf("%s once back: %v, %v; want epoch %s and both publications", name, after, err, before.Epoch)
	}
}

// BenchmarkPublishAcrossTwoMembers publishes through both members of a
// two-member cluster, from many goroutines at once, to 100 channels with
// no subscribers: the cost of sequencing, and of keeping a replica on the
// other member, per publication (both members' CPU, one process, as
// cpu-µs/op: the members wait on each other, so ns/op is mostly latency).
func BenchmarkPublishAcrossTwoMembers(b *testing.B) {
	for _, replicas := range []int{0, 1} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			if raceEnabled {
				b.Skip("protoactor's internal races between two members in one process")
			}
			etcd := startEtcd(b)
			members := []*Broker{startMember(b, etcd, replicas), startMember(b, etcd, replicas)}
			waitForMembers(b, 2, members...)
			ctx := context.Background()
			for i := range 100 { // activate every channel before timing
				if _, err := members[i%2].Publish(ctx, fmt.Sprintf("bench:%d", i), []byte(`"warm"`), ""); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.ReportAllocs()
			cpuBefore, measured := processCPU()
			b.ResetTimer()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					if _, err := members[i%2].Publish(ctx, fmt.Sprintf("bench:%d", i%100), []byte(`"x"`), ""); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if cpuAfter, ok := processCPU(); measured && ok {
				b.ReportMetric(float64((cpuAfter-cpuBefore).Microseconds())/float64(b.N), "cpu-µs/op")
			}
		})
	}
}
