package actors

import (
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// replication is a channel activation's side of its replicas: the members
// that keep a copy of its state (those rendezvous hashing ranks right
// after this one, so the next owner holds the copy), how far each has
// confirmed, and the publications sequenced but not yet confirmed by all
// of them. Relays receive a publication, and its publisher the answer,
// only once every replica has it: an offset a subscriber saw is never
// given to other content, whichever node dies. Publications are sent to
// the replicas as they are sequenced and confirmed cumulatively, so
// replication pipelines rather than waiting a round trip each.
type replication struct {
	targets []string          // replica addresses
	acked   map[string]uint64 // address → offset its copy holds
	// address → c.last when the whole state was last sent there: appends
	// sent before it that the replica refused need no other resync
	syncedTo map[string]uint64
	// address → what it had confirmed at the last replicaCheck: a replica
	// that confirms, however slowly, is catching up and needs no resync
	checked map[string]uint64
	pending []unconfirmed
	// Copies kept elsewhere for this channel that are no longer needed once
	// every target confirms offset dropAfter.
	formerHolders map[string]uint64 // address → term of the copy there
	dropAfter     uint64
	checking      bool // a replicaCheck is scheduled
	// users who arrived and left since the replicas were last told
	arrived, left []string
	// what happened since the replicas were last sent an update
	outgoing *pb.ReplicaUpdate
	// requests waiting for the publications sequenced before them
	waiting []awaitingDelivery
}

// awaitingDelivery is a request answered once every publication sequenced
// before it arrived is delivered: a history read, which must hold the
// publications whose publishers the replica may have answered already, or
// a compare-and-publish refused with the channel's last offset, which must
// name no offset that a failover could give to other content.
type awaitingDelivery struct {
	through uint64
	asker   *actor.PID
	query   *pb.QueryHistory // a history read; otherwise answer
	answer  *pb.Published
}

// unconfirmed is a publication sequenced and sent to the replicas, not yet
// confirmed by all of them: its delivery and the publishers waiting.
type unconfirmed struct {
	delivery *pb.Delivery
	answer   *pb.Published
	waiters  []*actor.PID
	// The update asked the replica to answer waiters[0], and it did.
	replyAsked, replied bool
	at                  time.Time
}

// replicaCheck reminds an activation to look for replicas that fell
// behind (a message lost with a torn-down stream, a replica restarted).
type replicaCheck struct{}

// sendAppends reminds an activation to send what happened to its
// replicas. It queues behind the messages already in the mailbox, so under
// load one update carries many publications.
type sendAppends struct{}

// replicaResync is how long a publication may wait for a replica before
// the replica is sent the whole state again.
const replicaResync = time.Second

// replicaTargets are the members, besides this one, that rendezvous
// hashing ranks highest for the channel: the ones that own it next.
func (b *Broker) replicaTargets(channel string) []string {
	n := b.opts.ChannelReplicas
	if n <= 0 {
		return nil
	}
	v := b.view.Load()
	targets := make([]string, 0, n)
	for _, address := range v.owners.Ranked(channel) {
		if address != v.self && len(targets) < n {
			targets = append(targets, address)
		}
	}
	return targets
}

// retarget makes the members ranked next the channel's replicas: new
// ones get the state whole; copies on members that stopped being
// replicas are dropped once the new ones hold everything.
func (c *channel) retarget(ctx actor.Context) {
	targets := c.broker.replicaTargets(c.name)
	if slices.Equal(targets, c.rep.targets) {
		// With no replicas nothing else would drop the copies left
		// elsewhere, such as the one a lone successor took over.
		c.flush(ctx)
		return
	}
	if c.rep.acked == nil {
		c.rep.acked = map[string]uint64{}
	}
	var fresh []string
	for _, t := range targets {
		if _, known := c.rep.acked[t]; !known {
			c.rep.acked[t] = 0
			fresh = append(fresh, t)
		}
	}
	former := c.rep.targets
	c.rep.targets = targets
	c.sync(ctx, fresh, "new")
	for _, old := range former {
		if !slices.Contains(targets, old) {
			delete(c.rep.acked, old)
			delete(c.rep.syncedTo, old)
			delete(c.rep.checked, old)
			c.forgetCopyAt(old, c.placement.term)
		}
	}
	c.flush(ctx)
}

// forgetCopyAt marks the copy kept at address for the activation of term
// to be dropped once the current replicas hold all there is now.
func (c *channel) forgetCopyAt(address string, term uint64) {
	if address == "" || slices.Contains(c.rep.targets, address) {
		return
	}
	if c.rep.formerHolders == nil {
		c.rep.formerHolders = map[string]uint64{}
	}
	c.rep.formerHolders[address] = max(c.rep.formerHolders[address], term)
	c.rep.dropAfter = c.last
}

// sequenced hands a new publication on: at once without replicas,
// otherwise to every replica, and to relays and publisher once all of
// them confirm it.
func (c *channel) sequenced(ctx actor.Context, delivery *pb.Delivery, kept stored, publisher string, answer *pb.Published) {
	if len(c.rep.targets) == 0 {
		c.deliver(ctx, delivery)
		ctx.Respond(answer)
		return
	}
	update := c.update(ctx)
	update.Publications = append(update.Publications, &pb.ChannelState_Stored{Offset: kept.offset, AtUnixNano: kept.at.UnixNano(),
		Frame: kept.frame, ExcludedUser: kept.excluded})
	p := unconfirmed{delivery: delivery, answer: answer, at: kept.at}
	waiter := ctx.Sender()
	if waiter != nil {
		p.waiters = []*actor.PID{waiter}
	}
	if publisher != "" {
		update.Answered = append(update.Answered, answeredOf(publisher, answer))
		if waiter != nil && len(c.rep.targets) == 1 {
			update.Replies = append(update.Replies, &pb.ReplicaUpdate_Reply{Answered: uint32(len(update.Answered) - 1),
				Address: waiter.Address, Actor: waiter.Id, RequestId: waiter.RequestId})
			p.replyAsked = true
		}
	}
	c.rep.pending = append(c.rep.pending, p)
	c.checkReplicasLater(ctx)
}

// update is the update under way to the replicas; a new one goes out
// once the messages already in the mailbox are handled.
func (c *channel) update(ctx actor.SenderContext) *pb.ReplicaUpdate {
	if c.rep.outgoing == nil {
		c.rep.outgoing = &pb.ReplicaUpdate{Channel: c.name, Term: c.placement.term, Epoch: c.epoch, OwnerActor: c.placement.pid.Id}
		ctx.Send(c.placement.pid, sendAppends{})
	}
	return c.rep.outgoing
}

// sendAppends hands what happened since the last update to this node's
// replica actor, for every replica.
func (c *channel) sendAppends(ctx actor.SenderContext) {
	if c.rep.outgoing == nil {
		return
	}
	if len(c.rep.targets) != 1 {
		// The replicas changed since: the one asked to answer may not be
		// the only one that must hold the publications first.
		c.rep.outgoing.Replies = nil
	}
	for _, t := range c.rep.targets {
		ctx.Send(c.broker.replicaRouter, replicate{to: t, update: c.rep.outgoing})
	}
	c.rep.outgoing = nil
}

// awaitReplicas makes a retry of a publication not yet confirmed by the
// replicas wait for it as the first attempt does; it reports false when
// the publication was confirmed already.
func (c *channel) awaitReplicas(ctx actor.Context, offset uint64) bool {
	for i := range c.rep.pending {
		if p := &c.rep.pending[i]; p.delivery.Offset == offset {
			if ctx.Sender() != nil {
				p.waiters = append(p.waiters, ctx.Sender())
			}
			return true
		}
	}
	return false
}

// replicated takes a replica's confirmation.
func (c *channel) replicated(ctx actor.Context, ack *pb.ReplicaAck) {
	if ack.Term != c.placement.term {
		return
	}
	from := ack.Replica
	if _, target := c.rep.acked[from]; !target {
		return
	}
	switch {
	case ack.Stale:
		// A newer activation keeps its copy there: this one was fenced.
		c.placement.moved.Store(true)
	case ack.Resync:
		if ack.Offset > c.rep.syncedTo[from] {
			c.sync(ctx, []string{from}, "refused")
		}
	default:
		c.rep.acked[from] = max(c.rep.acked[from], ack.Offset)
		c.repliedBy(ack)
		c.flush(ctx)
	}
}

// repliedBy notes the publishers a replica answered itself, so that they
// are not answered twice.
func (c *channel) repliedBy(ack *pb.ReplicaAck) {
	if ack.RepliedFrom == 0 {
		return
	}
	for i := range c.rep.pending {
		p := &c.rep.pending[i]
		if p.delivery.Offset > ack.RepliedThrough {
			break
		}
		if p.delivery.Offset >= ack.RepliedFrom && p.replyAsked {
			p.replied = true
		}
	}
}

// flush delivers, in order, the pending publications every replica holds.
func (c *channel) flush(ctx actor.Context) {
	confirmed := c.last
	for _, t := range c.rep.targets {
		confirmed = min(confirmed, c.rep.acked[t])
	}
	done := 0
	for _, p := range c.rep.pending {
		if p.delivery.Offset > confirmed {
			break
		}
		c.deliver(ctx, p.delivery)
		for _, w := range p.unanswered() {
			ctx.Send(w, p.answer)
		}
		done++
	}
	if done > 0 {
		clear(c.rep.pending[:done])
		c.rep.pending = c.rep.pending[done:]
		c.answerWaiting(ctx)
	}
	// A fenced activation drops nothing: the copies may be all its
	// successor can take over.
	if len(c.rep.formerHolders) > 0 && confirmed >= c.rep.dropAfter && !c.placement.moved.Load() {
		for address, term := range c.rep.formerHolders {
			ctx.Send(actor.NewPID(address, replicaName), &pb.ReplicaDrop{Channel: c.name, Term: term})
		}
		c.rep.formerHolders = nil
	}
}

func (c *channel) checkReplicasLater(ctx actor.Context) {
	if c.rep.checking {
		return
	}
	c.rep.checking = true
	root, self := ctx.ActorSystem().Root, ctx.Self()
	time.AfterFunc(replicaResync, func() { root.Send(self, replicaCheck{}) })
}

// checkReplicas sends the whole state again to replicas that have not
// confirmed a publication waiting longer than replicaResync and confirmed
// nothing since the last check. One that confirms, however slowly (it was
// paused, or a burst of large publications crosses to it), would only be
// slowed further by the whole state every second.
func (c *channel) checkReplicas(ctx actor.Context) {
	c.rep.checking = false
	if c.rep.checked == nil {
		c.rep.checked = map[string]uint64{}
	}
	defer func() {
		for _, t := range c.rep.targets {
			c.rep.checked[t] = c.rep.acked[t]
		}
	}()
	if len(c.rep.pending) == 0 {
		return
	}
	oldest := c.rep.pending[0]
	if time.Since(oldest.at) >= replicaResync {
		var stuck []string
		for _, t := range c.rep.targets {
			confirmed, before := c.rep.acked[t], c.rep.checked[t]
			if confirmed < oldest.delivery.Offset && confirmed <= before {
				stuck = append(stuck, t)
			}
		}
		c.sync(ctx, stuck, "stuck")
	}
	c.checkReplicasLater(ctx)
}

// abandonPending tells the publishers still waiting that this activation
// no longer answers: they ask the channel's next activation, which holds
// their answers.
func (c *channel) abandonPending(ctx actor.SenderContext) {
	for _, p := range c.rep.pending {
		for _, w := range p.unanswered() {
			ctx.Send(w, &pb.Moved{Sequence: p.answer.Sequence, Sequenced: true})
		}
	}
	c.rep.pending = nil
	for _, w := range c.rep.waiting {
		ctx.Send(w.asker, &pb.Moved{Sequence: w.sequence()})
	}
	c.rep.waiting = nil
}

// queryHistory answers a history request once the publications sequenced
// before it are delivered.
func (c *channel) queryHistory(ctx actor.Context, q *pb.QueryHistory) {
	c.answerOnceDelivered(ctx, awaitingDelivery{query: q})
}

// refuseExpectation answers a compare-and-publish whose expected offset is
// not the channel's last, with that offset once it is delivered.
func (c *channel) refuseExpectation(ctx actor.Context, msg *pb.Publish) {
	c.answerOnceDelivered(ctx, awaitingDelivery{answer: &pb.Published{Offset: c.last, Mismatch: true, Sequence: msg.Sequence}})
}

func (c *channel) answerOnceDelivered(ctx actor.Context, w awaitingDelivery) {
	w.through, w.asker = c.last, ctx.Sender()
	if c.delivered >= c.last || w.asker == nil {
		ctx.Respond(c.answerFor(w))
		return
	}
	c.rep.waiting = append(c.rep.waiting, w)
}

// answerWaiting answers the requests whose publications are all delivered
// now, in the order they came.
func (c *channel) answerWaiting(ctx actor.Context) {
	done := 0
	for _, w := range c.rep.waiting {
		if w.through > c.delivered {
			break
		}
		ctx.Send(w.asker, c.answerFor(w))
		done++
	}
	if done > 0 {
		clear(c.rep.waiting[:done])
		c.rep.waiting = c.rep.waiting[done:]
	}
}

func (c *channel) answerFor(w awaitingDelivery) proto.Message {
	if w.query != nil {
		return c.historySince(w.query.Since, w.query.Limit, w.query.User)
	}
	return w.answer
}

func (w awaitingDelivery) sequence() uint64 {
	if w.answer != nil {
		return w.answer.Sequence
	}
	return 0
}

// unanswered are the publishers still waiting for the publication.
func (p *unconfirmed) unanswered() []*actor.PID {
	if p.replied && len(p.waiters) > 0 {
		return p.waiters[1:]
	}
	return p.waiters
}

// replicatePresence tells the replicas who arrived and left, after the
// message that changed it and before any later publication.
func (c *channel) replicatePresence(ctx actor.SenderContext) {
	if len(c.rep.arrived) == 0 && len(c.rep.left) == 0 {
		return
	}
	if len(c.rep.targets) > 0 && c.placement.served.Load() {
		update := c.update(ctx)
		update.Arrived = append(update.Arrived, c.rep.arrived...)
		update.Left = append(update.Left, c.rep.left...)
	}
	c.rep.arrived, c.rep.left = nil, nil
}

// sync sends the whole state to the replicas at addresses, for the reason
// switchboard_replica_syncs_total counts it under.
func (c *channel) sync(ctx actor.Context, addresses []string, reason string) {
	if len(addresses) == 0 {
		return
	}
	if c.rep.syncedTo == nil {
		c.rep.syncedTo = map[string]uint64{}
	}
	c.sendAppends(ctx) // what the whole state overtakes is then ignored, in order
	whole := &pb.ReplicaUpdate{Channel: c.name, Term: c.placement.term, Epoch: c.epoch, Whole: c.state(), OwnerActor: c.placement.pid.Id}
	c.rep.arrived, c.rep.left = nil, nil // the state holds who is present
	for _, t := range addresses {
		c.rep.syncedTo[t] = c.last
		c.broker.metrics.ReplicaSyncs.WithLabelValues(reason).Inc()
		ctx.Send(c.broker.replicaRouter, replicate{to: t, update: whole})
	}
}

// dropReplicas tells the replicas the activation needs no copy any more.
func (c *channel) dropReplicas(ctx actor.SenderContext) {
	for _, t := range c.rep.targets {
		ctx.Send(actor.NewPID(t, replicaName), &pb.ReplicaDrop{Channel: c.name, Term: c.placement.term})
	}
}
