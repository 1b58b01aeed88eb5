package actors

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// activate makes a new activation the channel's one sequencer. It asks
// every node's relay who subscribes there; the question carries this
// activation's term, so older activations stand down, and a relay that
// knows a newer one says so and this one stands down instead. If an older
// activation is still alive (the channel moved because a node joined or
// is draining), it hands its state over and the epoch goes on; if its
// node died, the replica kept on a surviving member (this one, as a rule:
// the member ranked next) hands over the copy and the epoch goes on too.
// Only when neither is left does the channel start a new epoch. Either way
// the relays then follow this activation from where it starts, each given
// the publications it had not delivered yet.
func (c *channel) activate(ctx actor.Context) {
	if c.placement.moved.Load() {
		c.epoch = newEpoch()
		return
	}
	query := &pb.QueryChannelSubscribers{Channel: c.name, Term: c.placement.term}
	answers := c.broker.askRelays(ctx, query, relayTimeout)
	// The newest predecessor holds the latest state: an older one may have
	// been left behind by an earlier move.
	predecessor, predecessorTerm := "", uint64(0)
	copyAt, copyTerm, copyOffset := "", uint64(0), uint64(0)
	for address, answer := range answers {
		res, ok := answer.(*pb.ChannelSubscribers)
		if !ok {
			continue
		}
		if res.Stale {
			c.placement.moved.Store(true)
			c.epoch = newEpoch()
			return
		}
		if res.Predecessor && (predecessor == "" || res.PredecessorTerm > predecessorTerm) {
			predecessor, predecessorTerm = address, res.PredecessorTerm
		}
		if res.Replica && res.ReplicaTerm < c.placement.term && (copyAt == "" || res.ReplicaTerm > copyTerm ||
			(res.ReplicaTerm == copyTerm && res.ReplicaOffset > copyOffset)) {
			copyAt, copyTerm, copyOffset = address, res.ReplicaTerm, res.ReplicaOffset
		}
	}
	// A live or stopped predecessor's state is whole; a replica's is as
	// whole only if no newer activation replicated to it.
	tookOver := predecessor != "" && predecessorTerm >= copyTerm && c.takeOver(ctx, predecessor, false)
	if !tookOver && copyAt != "" {
		tookOver = c.takeOver(ctx, copyAt, true)
	}
	if !tookOver {
		c.epoch = newEpoch()
	}
	c.delivered = c.last
	for _, address := range c.broker.members() {
		res, ok := answers[address].(*pb.ChannelSubscribers)
		if !ok {
			c.unanswered[address] = true
			continue
		}
		for _, s := range res.Subscribers {
			c.add(s.ConnectionId, s.User, address, res.Member, s.PresenceEvents, s.Info)
		}
		if res.Replica && res.ReplicaTerm < c.placement.term {
			c.forgetCopyAt(address, res.ReplicaTerm)
		}
		ctx.Send(actor.NewPID(address, relayName), c.follow(res))
	}
	c.placement.served.Store(true)
	c.retarget(ctx)
	c.settleFormerUsers(ctx)
	c.askUnansweredRelaysLater(ctx)
}

// settleFormerUsers announces, once every relay has answered (or left),
// that the predecessor's users whose connections none of them holds have
// left: their node died with the predecessor's, or they left meanwhile.
// Users still connected see no leave and no join.
func (c *channel) settleFormerUsers(ctx actor.Context) {
	if c.formerUsers == nil || len(c.unanswered) > 0 {
		return
	}
	gone := make([]string, 0, len(c.formerUsers))
	for u := range c.formerUsers {
		if c.users[u] == nil {
			gone = append(gone, u)
		}
	}
	slices.Sort(gone)
	for _, u := range gone {
		c.announce(ctx, transport.LeaveFrame(c.name, u))
	}
	c.formerUsers = nil
}

// follow tells the relay that answered res where the stream continues,
// with the publications of this epoch it has not delivered yet (those
// its subscribers missed when the predecessor died), if the history still
// holds them all and they fit a history page. Otherwise its subscribers
// are told of the gap.
func (c *channel) follow(res *pb.ChannelSubscribers) *pb.FollowChannel {
	f := &pb.FollowChannel{Channel: c.name, Term: c.placement.term, Epoch: c.epoch, Offset: c.last}
	if res == nil || res.Epoch != c.epoch || res.LastOffset >= c.last {
		return f
	}
	size := 0
	for _, s := range c.retained() {
		if s.offset <= res.LastOffset {
			continue
		}
		if size += len(s.frame); size > maxHistoryPageBytes || (len(f.Missed) == 0 && s.offset != res.LastOffset+1) {
			f.Missed = nil
			return f
		}
		f.Missed = append(f.Missed, &pb.Delivery{Channel: c.name, Frame: s.frame, ExcludeUser: s.excluded,
			Epoch: c.epoch, Offset: s.offset, Term: c.placement.term})
	}
	return f
}

// takeOver asks the node at address for the channel's state, from the
// older activation there or from the replica kept there, and continues
// from it.
func (c *channel) takeOver(ctx actor.Context, address string, fromReplica bool) bool {
	state, err := c.askForState(ctx, address, fromReplica)
	if err != nil || !state.Found {
		c.broker.log.Warn("no state handed over", "channel", c.name, "from", address, "replica", fromReplica, "err", err)
		return false
	}
	c.epoch, c.last = state.Epoch, state.Offset
	c.history = append(c.history, storedFrom(state.History)...)
	c.trimHistory()
	c.recent = recentFrom(storedFrom(state.Recent))
	if state.ConfiguredCapacity > 0 {
		c.opts.Capacity, c.configured = int(state.ConfiguredCapacity), true
	}
	for _, a := range state.Answered {
		c.retries.remember(a.Publisher, a.Sequence, &pb.Published{Offset: a.Offset, Mismatch: a.Mismatch, OutcomeUnknown: a.OutcomeUnknown, Sequence: a.Sequence})
	}
	c.lineage = append(c.lineage, state.Lineage[max(0, len(state.Lineage)-maxLineage+1):]...)
	c.formerUsers = make(map[string]bool, len(state.Users))
	for _, u := range state.Users {
		c.formerUsers[u] = true
	}
	c.broker.metrics.HandOvers.Inc()
	return true
}

// askForState asks the relay at address for the predecessor's state. The
// predecessor may stop between the relay passing the question on and
// answering it (a moved activation stops movedLinger after it learns it
// moved): its mail is then dropped, and asking again finds the state it
// left with the relay.
func (c *channel) askForState(ctx actor.Context, address string, fromReplica bool) (*pb.ChannelState, error) {
	deadline := time.Now().Add(handOverTimeout)
	ask := &pb.HandOver{Channel: c.name, Term: c.placement.term, FromReplica: fromReplica}
	for {
		res, err := ctx.RequestFuture(actor.NewPID(address, relayName), ask, min(time.Until(deadline), attemptTimeout)).Result()
		if state, ok := res.(*pb.ChannelState); err == nil && ok {
			return state, nil
		}
		if time.Until(deadline) <= 0 {
			return nil, fmt.Errorf("hand-over from %s: %v", address, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handOver answers a newer activation with this one's state. From the
// moment its relay passed the question on, this activation has been
// marked moved, so the state is final: nothing more is sequenced here.
func (c *channel) handOver(ctx actor.Context) {
	c.placement.moved.Store(true)
	c.handedOver = true
	ctx.Respond(c.state())
	c.abandonPending(ctx)
	c.idle.stopSoon(ctx, movedLinger)
}

// stopped keeps the state of an activation that stops for its successor
// on this node or another, to take through this node's relay: its epoch,
// offset and history, and its answers to publishers, so a publication
// retried after it was dropped with the activation's mailbox (protoactor
// discards mail reaching a stopping actor) is neither lost nor applied
// twice. A channel that moved (movedAway) and holds subscribers or
// history is woken where it now belongs, so the successor takes over now
// rather than at the channel's next use.
func (c *channel) stopped(ctx actor.SenderContext) {
	c.abandonPending(ctx)
	if c.handedOver || !c.placement.served.Load() {
		return // it never took over: it holds nothing of the channel's
	}
	if c.unused() && !c.placement.moved.Load() {
		c.dropReplicas(ctx)
	}
	// Even an unused one: its name in the successor's lineage says that a
	// publication it never answered was never sequenced.
	c.broker.handoffs.keep(c.name, c.placement.term, c.state())
	moved := c.placement.moved.Load() || !c.broker.view.Load().owns(ChannelKind, c.name)
	if moved && !c.unused() && c.broker.membership.Certain() { // not while this node leaves: it wakes them itself
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.broker.opts.RequestTimeout)
			defer cancel()
			c.broker.wake(ctx, c.name)
		}()
	}
}

// state is what a successor needs to go on where this activation stands.
func (c *channel) state() *pb.ChannelState {
	c.trimHistory()
	state := &pb.ChannelState{Found: true, Epoch: c.epoch, Offset: c.last, Lineage: c.lineage,
		History: storedState(c.history), Recent: storedState(c.recent.trim()), Answered: answeredState(&c.retries), Users: slices.Clone(c.userOrder)}
	if c.configured {
		state.ConfiguredCapacity = uint32(c.opts.Capacity)
	}
	return state
}

// handOverTimeout bounds the wait for a predecessor's state; past it the
// channel starts a new epoch.
const handOverTimeout = 2 * time.Second

// maxLineage bounds the activations a channel remembers holding the
// answers of; retries outlive a few moves at most.
const maxLineage = 8

// askRelaysAgain reminds a channel to ask the relays that have not
// answered yet: a busy or briefly unreachable node keeps its subscribers.
type askRelaysAgain struct{}

func (c *channel) askUnansweredRelaysLater(ctx actor.Context) {
	if len(c.unanswered) == 0 {
		return
	}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	time.AfterFunc(relayTimeout, func() { root.Send(self, askRelaysAgain{}) })
}

// askUnansweredRelays asks again, without waiting, every relay that has
// not answered, as long as its member is in the cluster; the answer comes
// back as a message.
func (c *channel) askUnansweredRelays(ctx actor.Context) {
	members := c.broker.view.Load().members
	query := &pb.QueryChannelSubscribers{Channel: c.name, Term: c.placement.term}
	for address := range c.unanswered {
		if _, member := members[address]; !member {
			delete(c.unanswered, address)
			continue
		}
		ctx.Request(actor.NewPID(address, relayName), query)
	}
	c.settleFormerUsers(ctx)
	c.askUnansweredRelaysLater(ctx)
}

// lateAnswer takes the subscribers of a relay that answered after the
// activation went on without it. They missed what was published
// meanwhile: their relay follows this activation from its current offset
// and tells them so (a gap frame).
func (c *channel) lateAnswer(ctx actor.Context, res *pb.ChannelSubscribers) {
	for address, member := range c.broker.view.Load().members {
		if member != res.Member || !c.unanswered[address] {
			continue
		}
		delete(c.unanswered, address)
		if res.Stale {
			c.placement.moved.Store(true)
			return
		}
		for _, s := range res.Subscribers {
			if _, arrived := c.add(s.ConnectionId, s.User, address, res.Member, s.PresenceEvents, s.Info); arrived && !c.formerUsers[s.User] {
				c.announce(ctx, transport.JoinFrame(c.name, s.User, s.Info))
			}
		}
		ctx.Send(actor.NewPID(address, relayName), c.follow(res))
	}
	c.settleFormerUsers(ctx)
}
