package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// presenceEvents coalesces a channel's join and leave events. An event
// after a quiet moment goes out at once; those that follow within
// presenceWindow wait and go out together, in order, in one
// presence_batch frame. N users arriving at once then cost each
// subscriber a few frames rather than N.
type presenceEvents struct {
	pending  [][]byte // join and leave frames, in order
	size     int
	lastSent time.Time
	armed    bool // a flushPresence is scheduled
}

// presenceWindow is the longest a join or leave event waits for others.
const presenceWindow = 100 * time.Millisecond

// maxPresenceBatchBytes sends a batch early rather than let one frame grow
// beyond what a client's outbox takes comfortably.
const maxPresenceBatchBytes = 256 << 10

// flushPresence reminds a channel to send the events that waited.
type flushPresence struct{}

// announce sends a join or leave event to the subscribers that want them.
func (c *channel) announce(ctx actor.Context, frame []byte) {
	if c.presenceSubscribers == 0 {
		return
	}
	p := &c.presenceEvents
	now := time.Now()
	if len(p.pending) == 0 && now.Sub(p.lastSent) >= presenceWindow {
		p.lastSent = now
		c.sendPresence(ctx, frame)
		return
	}
	p.pending = append(p.pending, frame)
	if p.size += len(frame); p.size >= maxPresenceBatchBytes {
		c.flushPresence(ctx)
		return
	}
	if !p.armed {
		p.armed = true
		root, self := ctx.ActorSystem().Root, ctx.Self()
		time.AfterFunc(time.Until(p.lastSent.Add(presenceWindow)), func() { root.Send(self, flushPresence{}) })
	}
}

// flushPresence sends the events that waited, in one frame.
func (c *channel) flushPresence(ctx actor.SenderContext) {
	p := &c.presenceEvents
	p.armed = false
	if len(p.pending) == 0 {
		return
	}
	frame := p.pending[0]
	if len(p.pending) > 1 {
		frame = transport.PresenceBatchFrame(c.name, p.pending)
	}
	p.pending, p.size, p.lastSent = nil, 0, time.Now()
	c.sendPresence(ctx, frame)
}

func (c *channel) sendPresence(ctx actor.SenderContext, frame []byte) {
	event := &pb.Delivery{Channel: c.name, Frame: frame, PresenceOnly: true}
	for _, r := range c.relays {
		ctx.Send(r.pid, event)
	}
}
