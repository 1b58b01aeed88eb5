package actors

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// channel is the grain for one channel: the single sequencer of its
// publications and the owner of its subscriber set, presence and history.
// It encodes each publication once and hands the bytes to one relay per
// node.
type channel struct {
	broker *Broker
	name   string
	opts   ChannelOptions
	epoch  string // changes whenever this channel's history is lost
	last   uint64 // offset of the latest publication
	// offset of the latest publication handed to relays: every replica
	// holds it, so subscribers, history and recovery may see it
	delivered uint64

	placement   *placement
	subscribers map[string]*subscriber // connection id → subscriber
	relays      map[string]*relayRef   // member id → that member's relay
	users       map[string]*occupant   // user → their connections here
	userOrder   []string               // the keys of users, sorted: presence pages read from it
	history     []stored               // oldest first
	// Without history, the publications of the last moments, so a
	// successor can give relays what the dead predecessor sent them last.
	recent     recentPublications
	configured bool            // settings from the HTTP API keep it loaded
	unanswered map[string]bool // relays (by address) yet to say who subscribes here
	handedOver bool            // a successor has this activation's state
	lineage    []string        // this activation and those whose answers it holds (address/id)
	idle       passivation
	retries    retries
	rep        replication
	// subscribers that want join and leave events, and those events
	// waiting to go out together
	presenceSubscribers int
	presenceEvents      presenceEvents
	// users the predecessor had whose connections are not found yet: once
	// every relay has answered, those still missing left
	formerUsers map[string]bool
}

type subscriber struct {
	user     string
	relay    *relayRef
	sequence uint64 // of the Subscribe that added it
	presence bool   // wants join/leave events
	info     []byte
}

type relayRef struct {
	pid         *actor.PID
	member      string
	subscribers int
}

// occupant is one user present in the channel: how many of their
// connections subscribe, and what presence shows of them. (A member is a
// cluster member.)
type occupant struct {
	connections int
	info        []byte
}

type stored struct {
	offset uint64
	at     time.Time
	frame  []byte

	excluded string // the user this publication is not for (HTTP API exclude_user)
}

// frameFor is the entry as user sees it in history or a recovery backlog:
// a publication that excluded them is a skip frame, so their offsets stay
// contiguous without the data.
func (s stored) frameFor(user, channel, epoch string) []byte {
	if s.excluded != "" && s.excluded == user {
		return transport.SkipFrame(channel, epoch, s.offset)
	}
	return s.frame
}

func newChannel(b *Broker) *channel {
	return &channel{broker: b, subscribers: map[string]*subscriber{}, relays: map[string]*relayRef{}, unanswered: map[string]bool{},
		users: map[string]*occupant{}, idle: passivation{idle: b.opts.GrainIdleTimeout}}
}

func (c *channel) Receive(ctx actor.Context) {
	defer c.replicatePresence(ctx)
	if _, reminder := ctx.Message().(*pb.IdleCheck); !reminder {
		c.idle.touch()
	}
	switch msg := ctx.Message().(type) {
	case *cluster.ClusterInit:
		c.name = msg.Identity.Identity
		c.opts = c.broker.opts.Namespaces.For(c.name)
		c.placement = c.broker.place(ChannelKind, c.name, ctx.Self())
		c.lineage = []string{activationName(ctx.Self())}
		c.broker.metrics.Actors.WithLabelValues(ChannelKind).Inc()
		c.activate(ctx)
		c.idleWhenUnused(ctx)
		return
	case *pb.HandOver:
		c.handOver(ctx)
		return
	case *pb.ReplicaAck:
		c.replicated(ctx, msg)
		return
	case replicaCheck:
		c.checkReplicas(ctx)
		return
	case sendAppends:
		c.sendAppends(ctx)
		return
	case flushPresence:
		c.flushPresence(ctx)
		return
	case membersChanged:
		if c.placement.served.Load() && !c.placement.moved.Load() {
			c.retarget(ctx)
		}
		return
	case *actor.Stopped:
		c.idle.cancel()
		c.flushPresence(ctx)
		c.stopped(ctx)
		c.broker.unplace(c.placement)
		c.broker.metrics.Actors.WithLabelValues(ChannelKind).Dec()
		c.broker.metrics.Subscriptions.Sub(float64(len(c.subscribers)))
		return
	case *pb.MembersLeft:
		c.forgetMembers(ctx, msg.Members)
		return
	case askRelaysAgain:
		c.askUnansweredRelays(ctx)
		return
	case *pb.ChannelSubscribers:
		c.lateAnswer(ctx, msg)
		return
	case *pb.IdleCheck:
		if c.placement.moved.Load() {
			ctx.Stop(ctx.Self())
			return
		}
		c.trimHistory()
		c.idle.check(ctx, c.unused())
		if len(c.subscribers) == 0 && !c.configured && len(c.history) > 0 {
			// Kept for its history: look again when the oldest entry expires.
			c.idle.arm(ctx, time.Until(c.history[0].at.Add(c.opts.HistoryTTL))+time.Millisecond)
		}
		return
	case *actor.Started, *actor.Stopping, *actor.Restarting:
		return
	}
	if !c.broker.serving(c.placement) {
		standDown(ctx, c.placement, &c.idle)
		return
	}
	switch msg := ctx.Message().(type) {
	case *pb.Publish:
		c.publish(ctx, msg)
	case *pb.Subscribe:
		c.subscribe(ctx, msg)
	case *pb.Unsubscribe:
		c.unsubscribe(ctx, msg)
	case *pb.QuerySubscribers:
		ctx.Respond(c.list())
	case *pb.QueryPresence:
		ctx.Respond(c.presence(msg.After, msg.Limit))
	case *pb.QueryHistory:
		c.queryHistory(ctx, msg)
	case *pb.Activate:
		ctx.Respond(&pb.Activated{})
	case *pb.ConfigureChannel:
		c.opts.Capacity = int(msg.Capacity)
		if msg.Capacity == 0 {
			c.opts.Capacity = c.broker.opts.Namespaces.For(c.name).Capacity
		}
		c.configured = msg.Capacity != 0
		c.sync(ctx, c.rep.targets, "settings") // the replicas keep the setting too
		ctx.Respond(&pb.ChannelConfigured{})
		c.idleWhenUnused(ctx)
	}
}

// add registers a subscriber and reports whether its user just arrived.
func (c *channel) add(connectionID, user, relayAddress, relayMember string, presence bool, info []byte) (*subscriber, bool) {
	if sub, known := c.subscribers[connectionID]; known {
		return sub, false
	}
	r := c.relays[relayMember]
	if r == nil {
		r = &relayRef{pid: actor.NewPID(relayAddress, relayName), member: relayMember}
		c.relays[relayMember] = r
	}
	r.subscribers++
	sub := &subscriber{user: user, relay: r, presence: presence || c.opts.Presence, info: info}
	c.subscribers[connectionID] = sub
	if sub.presence {
		c.presenceSubscribers++
	}
	c.broker.metrics.Subscriptions.Inc()
	m := c.users[user]
	arrived := m == nil
	if arrived {
		m = &occupant{}
		c.users[user] = m
		at, _ := slices.BinarySearch(c.userOrder, user)
		c.userOrder = slices.Insert(c.userOrder, at, user)
		c.rep.arrived = append(c.rep.arrived, user)
	}
	m.connections++
	if len(info) > 0 {
		m.info = info
	}
	return sub, arrived
}

// remove forgets a subscriber and reports whether its user left with it.
func (c *channel) remove(connectionID string) (*subscriber, bool, bool) {
	sub, ok := c.subscribers[connectionID]
	if !ok {
		return nil, false, false
	}
	delete(c.subscribers, connectionID)
	c.broker.metrics.Subscriptions.Dec()
	if sub.presence {
		c.presenceSubscribers--
	}
	if sub.relay.subscribers--; sub.relay.subscribers == 0 {
		delete(c.relays, sub.relay.member)
	}
	left := false
	if m := c.users[sub.user]; m != nil {
		if m.connections--; m.connections == 0 {
			delete(c.users, sub.user)
			if at, found := slices.BinarySearch(c.userOrder, sub.user); found {
				c.userOrder = slices.Delete(c.userOrder, at, at+1)
			}
			c.rep.left = append(c.rep.left, sub.user)
			left = true
		}
	}
	return sub, true, left
}

// forgetMembers drops the subscribers on members that left the cluster,
// with leave events for the users who went with them.
func (c *channel) forgetMembers(ctx actor.Context, members []string) {
	for _, member := range members {
		if c.relays[member] == nil {
			continue
		}
		for id, sub := range c.subscribers {
			if sub.relay.member == member {
				if _, _, left := c.remove(id); left {
					c.announce(ctx, transport.LeaveFrame(c.name, sub.user))
				}
			}
		}
	}
	c.idleWhenUnused(ctx)
}

func (c *channel) publish(ctx actor.Context, msg *pb.Publish) {
	if answer, done := c.retries.answered(msg.Publisher, msg.Sequence); done {
		if p, ok := answer.(*pb.Published); !ok || !c.awaitReplicas(ctx, p.Offset) {
			ctx.Respond(answer)
		}
		return
	}
	if msg.UnansweredBy != "" && !slices.Contains(c.lineage, msg.UnansweredBy) {
		// An earlier attempt reached an activation whose answers this one
		// does not hold (its node died): it may have been sequenced there.
		answer := &pb.Published{OutcomeUnknown: true, Sequence: msg.Sequence}
		c.retries.remember(msg.Publisher, msg.Sequence, answer)
		ctx.Respond(answer)
		return
	}
	if msg.HasExpectOffset && msg.ExpectOffset != c.last {
		c.refuseExpectation(ctx, msg)
		return
	}
	c.last++
	now := time.Now()
	frame := transport.MessageFrame(c.name, msg.User, msg.Data, c.last, c.epoch, now.UnixMilli())
	kept := stored{offset: c.last, at: now, frame: frame, excluded: msg.ExcludeUser}
	c.keep(kept)
	delivery := &pb.Delivery{Channel: c.name, Frame: frame, ExcludeUser: msg.ExcludeUser,
		Epoch: c.epoch, Offset: c.last, Term: c.placement.term}
	c.broker.metrics.Publications.Inc()
	answer := &pb.Published{Offset: c.last, Sequence: msg.Sequence}
	c.retries.remember(msg.Publisher, msg.Sequence, answer)
	c.sequenced(ctx, delivery, kept, msg.Publisher, answer)
	c.idleWhenUnused(ctx)
}

// deliver hands a publication to every relay with subscribers.
func (c *channel) deliver(ctx actor.Context, delivery *pb.Delivery) {
	self := ctx.Self().Address
	for _, r := range c.relays {
		ctx.Send(r.pid, delivery)
		if r.pid.Address != self {
			c.broker.metrics.RemoteDeliveries.Inc()
		}
	}
	c.delivered = max(c.delivered, delivery.Offset)
}

func (c *channel) subscribe(ctx actor.Context, msg *pb.Subscribe) {
	if sub, known := c.subscribers[msg.ConnectionId]; known && msg.Sequence != 0 && sub.sequence == msg.Sequence {
		ctx.Respond(&pb.Subscribed{}) // a retry: the reply frame went out already
		return
	}
	_, known := c.subscribers[msg.ConnectionId]
	if !known && !c.broker.isMember(msg.RelayMember) {
		// Sent from a node that has left since: nobody there to deliver to.
		ctx.Respond(&pb.Subscribed{})
		return
	}
	if !known && c.opts.Capacity > 0 && c.users[msg.User] == nil && len(c.users) >= c.opts.Capacity {
		ctx.Respond(&pb.Subscribed{RefusedCode: transport.CodeChannelFull,
			RefusedText: fmt.Sprintf("Channel %s is full: at most %d users", c.name, c.opts.Capacity)})
		return
	}
	sub, arrived := c.add(msg.ConnectionId, msg.User, msg.RelayAddress, msg.RelayMember, msg.PresenceEvents, msg.Info)
	sub.sequence = msg.Sequence
	added := &pb.SubscriberAdded{Channel: c.name, ConnectionId: msg.ConnectionId, PresenceEvents: sub.presence, Info: sub.info,
		Term: c.placement.term, Epoch: c.epoch, Offset: c.delivered}
	var recovered *bool
	if msg.Recover {
		ok, backlog := c.recover(msg.RecoverOffset, msg.RecoverEpoch, msg.User)
		recovered, added.Backlog = &ok, backlog
	}
	added.Reply = transport.SubscribedFrame(c.name, c.delivered, c.epoch, recovered, msg.ReplyId)
	// The relay queues the reply and any backlog, so they precede every
	// later publication.
	ctx.Request(sub.relay.pid, added)
	if arrived {
		c.announce(ctx, transport.JoinFrame(c.name, msg.User, sub.info))
	}
	ctx.Respond(&pb.Subscribed{})
}

// recover returns the stored publications after offset in epoch, as user
// sees them, if the history still holds every one of them and they fit
// one history page.
func (c *channel) recover(offset uint64, epoch, user string) (bool, [][]byte) {
	if epoch != c.epoch || offset > c.delivered {
		return false, nil
	}
	if offset == c.delivered {
		return true, nil
	}
	c.trimHistory()
	if len(c.history) == 0 || c.history[0].offset > offset+1 {
		return false, nil
	}
	var backlog [][]byte
	size := 0
	for _, s := range c.history {
		if s.offset > c.delivered {
			break
		}
		if s.offset > offset {
			frame := s.frameFor(user, c.name, c.epoch)
			if size += len(frame); size > maxHistoryPageBytes {
				// More than a client's outbox should take at once: a gap
				// frame tells it to read them from history, page by page,
				// before what follows.
				return true, [][]byte{transport.GapFrame(c.name, c.epoch, c.delivered)}
			}
			backlog = append(backlog, frame)
		}
	}
	return true, backlog
}

func (c *channel) unsubscribe(ctx actor.Context, msg *pb.Unsubscribe) {
	sub, removed, left := c.remove(msg.ConnectionId)
	if removed {
		notice := &pb.SubscriberRemoved{Channel: c.name, ConnectionId: msg.ConnectionId}
		if msg.Reply {
			notice.Reply = transport.UnsubscribedFrame(c.name, msg.ReplyId)
		}
		ctx.Send(sub.relay.pid, notice)
		if left {
			c.announce(ctx, transport.LeaveFrame(c.name, sub.user))
		}
		c.idleWhenUnused(ctx)
	}
	if ctx.Sender() != nil {
		ctx.Respond(&pb.Unsubscribed{Removed: removed})
	}
}

// trimHistory drops publications beyond the size or older than the TTL.
func (c *channel) trimHistory() { c.history = trimStored(c.history, c.opts) }

// keep retains a new publication: in the history, or without one among
// the recent publications.
func (c *channel) keep(s stored) {
	if c.opts.HistorySize > 0 {
		c.history = append(c.history, s)
		c.trimHistory()
		return
	}
	c.recent.add(s)
}

// retained is what the channel still holds of its latest publications.
func (c *channel) retained() []stored {
	if c.opts.HistorySize > 0 {
		c.trimHistory()
		return c.history
	}
	return c.recent.trim()
}

// maxHistoryPageBytes bounds one history answer, so it fits a client's
// outbox (--outbox-bytes, 4 MiB by default) beside its live traffic; a
// page holds at least one publication.
const maxHistoryPageBytes = 1 << 20

// historySince answers a history request of user.
func (c *channel) historySince(since uint64, limit uint32, user string) *pb.History {
	c.trimHistory()
	res := &pb.History{Offset: c.delivered, Epoch: c.epoch}
	size := 0
	for _, s := range c.history {
		if s.offset <= since {
			continue
		}
		if s.offset > c.delivered {
			break
		}
		frame := s.frameFor(user, c.name, c.epoch)
		full := limit > 0 && len(res.Frames) == int(limit)
		if full || (len(res.Frames) > 0 && size+len(frame) > maxHistoryPageBytes) {
			res.More = true
			break
		}
		res.Frames = append(res.Frames, frame)
		size += len(frame)
	}
	return res
}

// unused: nobody listens, nothing is kept, nothing was configured.
func (c *channel) unused() bool {
	return len(c.subscribers) == 0 && len(c.history) == 0 && !c.configured
}

// idleWhenUnused arms passivation once the channel holds nothing.
func (c *channel) idleWhenUnused(ctx actor.Context) {
	if len(c.subscribers) == 0 && !c.configured {
		c.idle.arm(ctx, c.broker.opts.GrainIdleTimeout)
	}
}

func (c *channel) list() *pb.SubscriberList {
	return &pb.SubscriberList{Users: slices.Clone(c.userOrder)}
}

// presence lists the users after `after` in user order, at most limit
// (0: all); a limited page also stops at maxHistoryPageBytes of info.
func (c *channel) presence(after string, limit uint32) *pb.Presence {
	from, found := slices.BinarySearch(c.userOrder, after)
	if found {
		from++
	}
	res := &pb.Presence{}
	size := 0
	for _, u := range c.userOrder[from:] {
		m := c.users[u]
		size += len(u) + len(m.info) + 32
		if limit > 0 && (len(res.Members) == int(limit) || (len(res.Members) > 0 && size > maxHistoryPageBytes)) {
			res.More = true
			break
		}
		res.Members = append(res.Members, &pb.Presence_Member{User: u, Connections: uint32(m.connections), Info: m.info})
	}
	return res
}

func newEpoch() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
