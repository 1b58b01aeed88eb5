package actors

import (
	"fmt"
	"testing"
	"time"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// The hot paths of a publication, which must allocate nothing per
// delivery. Figures: BENCHMARKS.md, "Actor hot paths".

// BenchmarkRelayDeliver: one publication queued by the relay on 100 local
// subscribers' outboxes (one op is one publication, 100 deliveries).
func BenchmarkRelayDeliver(b *testing.B) {
	const subscribers = 100
	broker := NewBroker(Options{}, transport.NewMetrics(), nil)
	r := newRelay(broker)
	out := &countingOutbox{}
	for i := range subscribers {
		id := fmt.Sprintf("c%d", i)
		broker.local.add(&client{ID: id, User: fmt.Sprintf("u%d", i), Outbox: out}, nil, true)
		r.add(&pb.SubscriberAdded{Channel: "ch", ConnectionId: id, Term: 1, Epoch: "e1"})
	}
	d := &pb.Delivery{Channel: "ch", Frame: transport.MessageFrame("ch", "", []byte(`{"price":101.5}`), 1, "e1", time.Now().UnixMilli()),
		Term: 1, Epoch: "e1"}
	b.ReportAllocs()
	for offset := uint64(1); b.Loop(); offset++ {
		d.Offset = offset
		r.deliver(d)
	}
	if got := out.frames.Load(); got != int64(b.N*subscribers) {
		b.Fatalf("%d frames delivered, want %d", got, b.N*subscribers)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/delivery")
}

// BenchmarkChannelPublish: a client's publications through its connection
// actor to the channel grain, which sequences and encodes each, and on
// through the node's relay to the subscribers' in-memory outboxes, on one
// node without replication (one op is one publication, acknowledged and
// delivered to every subscriber).
func BenchmarkChannelPublish(b *testing.B) {
	for _, subscribers := range []int{1, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", subscribers), func(b *testing.B) {
			broker := startBroker(b)
			delivered := &countingOutbox{}
			for i := range subscribers {
				in := broker.open(&client{ID: fmt.Sprintf("s%d", i), User: fmt.Sprintf("u%d", i), Outbox: delivered}, transport.TokenInfo{})
				in.Command(&pb.ClientCommand{Kind: pb.ClientCommand_KIND_SUBSCRIBE, Channel: "bench"})
			}
			waitFrames(b, delivered, int64(2*subscribers)) // welcome, subscribed
			acks := &countingOutbox{}
			publisher := broker.open(&client{ID: "p", User: "publisher", Outbox: acks}, transport.TokenInfo{})
			waitFrames(b, acks, 1) // welcome
			cmd := &pb.ClientCommand{Kind: pb.ClientCommand_KIND_PUBLISH, Channel: "bench", Data: []byte(`{"price":101.5}`), Id: []byte(`1`)}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				publisher.Command(cmd)
			}
			waitFrames(b, acks, int64(1+b.N))
			waitFrames(b, delivered, int64(subscribers*(2+b.N)))
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/delivery")
		})
	}
}

func waitFrames(b *testing.B, out *countingOutbox, want int64) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for out.frames.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d frames, want %d", out.frames.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
}
