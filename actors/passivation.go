package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// passivation stops a grain that has been unused for a while. It keeps
// its own timer rather than protoactor's receive timeout, whose timer
// goroutine races with the mailbox.
type passivation struct {
	idle     time.Duration
	last     time.Time
	timer    *time.Timer
	stopping bool // stopSoon was called: the next check stops the grain
}

// touch records activity.
func (p *passivation) touch() { p.last = time.Now() }

// arm schedules a check if none is pending.
func (p *passivation) arm(ctx actor.Context, after time.Duration) {
	if p.timer != nil {
		return
	}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	p.timer = time.AfterFunc(after, func() { root.Send(self, &pb.IdleCheck{}) })
}

// check handles an IdleCheck: it stops the grain if it is unused and has
// been idle long enough, or checks again later.
func (p *passivation) check(ctx actor.Context, unused bool) {
	p.timer = nil
	if !unused {
		return
	}
	if idleFor := time.Since(p.last); idleFor < p.idle {
		p.arm(ctx, p.idle-idleFor)
		return
	}
	ctx.Stop(ctx.Self())
}

// stopSoon makes the grain stop after d, whatever it holds: it moved.
func (p *passivation) stopSoon(ctx actor.Context, d time.Duration) {
	if p.stopping {
		return
	}
	p.stopping = true
	p.cancel()
	p.timer = nil
	p.arm(ctx, d)
}

func (p *passivation) cancel() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
