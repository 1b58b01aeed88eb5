package actors

import (
	"context"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// forceClosing is the time CloseAll keeps to close the connections still
// waiting for answers.
const forceClosing = 250 * time.Millisecond

// CloseAll closes every connection on this node with code and waits,
// until ctx ends, for them to be gone. Each closes once its publications
// in flight are answered; those still waiting forceClosing before ctx ends
// are closed regardless.
func (b *Broker) CloseAll(ctx context.Context, code uint16, reason string) {
	gentle := &closeWhenAnswered{code: code, reason: reason}
	b.local.eachActor(func(pid *actor.PID) { b.system.Root.Send(pid, gentle) })
	answered, cancel := context.WithDeadline(ctx, b.deadline(ctx).Add(-forceClosing))
	defer cancel()
	for b.local.count() > 0 && answered.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	b.local.each(func(out *client) { out.Close(code, reason) })
	for b.local.count() > 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// HandOverChannels wakes each channel active on this node at its new
// owner, which takes the channel's state (epoch, offset, history) over
// from the activation here. Call it once this node drains (owns nothing
// any more, its relay still answering); it returns when every channel
// has been taken over or ctx ends.
func (b *Broker) HandOverChannels(ctx context.Context) {
	var channels []string
	b.placements.Range(func(_, value any) bool {
		if p := value.(*placement); p.kind == ChannelKind {
			channels = append(channels, p.identity)
		}
		return true
	})
	start := time.Now()
	b.wakeAll(ctx, channels)
	b.log.Info("channels handed over", "channels", len(channels), "took", time.Since(start).Round(time.Millisecond), "cut_short", ctx.Err() != nil)
}

// wakeAll activates channels at their owners, a few at a time.
func (b *Broker) wakeAll(ctx context.Context, channels []string) {
	const inParallel = 32
	slots := make(chan struct{}, inParallel)
	var wg sync.WaitGroup
	for _, name := range channels {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			b.wake(ctx, name)
		}()
	}
	wg.Wait()
}

// wake activates a channel at its owner, which takes its state over; it
// keeps trying until ctx ends (the owner may not know yet that it owns it).
func (b *Broker) wake(ctx context.Context, channel string) {
	if _, err := request[*pb.Activated](ctx, b, ChannelKind, channel, &pb.Activate{}); err != nil {
		b.log.Warn("moved channel not woken at its new owner", "channel", channel, "err", err)
	}
}

// CloseClientsWhileUncertain closes this node's clients with code
// whenever it has been unsure of its own membership for longer than
// grace (cut off from etcd): it sequences nothing meanwhile, and members
// in good standing can serve them. It returns when ctx ends.
func (b *Broker) CloseClientsWhileUncertain(ctx context.Context, grace time.Duration, code uint16, reason string) {
	tick := time.NewTicker(max(grace/8, 50*time.Millisecond))
	defer tick.Stop()
	var uncertainSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		switch {
		case b.membership.Certain():
			uncertainSince = time.Time{}
		case uncertainSince.IsZero():
			uncertainSince = time.Now()
		case time.Since(uncertainSince) > grace:
			b.local.each(func(out *client) { out.Close(code, reason) })
		}
	}
}
