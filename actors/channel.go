package actors

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
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
	b     *Broker
	name  string
	opts  ChannelOptions
	epoch string // changes whenever this channel's history is lost
	last  uint64 // offset of the latest publication

	subscribers map[string]*subscriber // connection id → subscriber
	relays      map[string]*relayRef   // relay address → relay
	users       map[string]*member     // user → their connections here
	history     []stored               // oldest first
	configured  bool                   // settings from the HTTP API keep it loaded
	idle        passivation
	retries     retries
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
	subscribers int
}

type member struct {
	connections int
	info        []byte
}

type stored struct {
	offset uint64
	at     time.Time
	frame  []byte
}

func newChannel(b *Broker) *channel {
	return &channel{b: b, subscribers: map[string]*subscriber{}, relays: map[string]*relayRef{},
		users: map[string]*member{}, idle: passivation{idle: b.opts.GrainIdleTimeout}}
}

func (c *channel) Receive(ctx actor.Context) {
	if _, reminder := ctx.Message().(*pb.IdleCheck); !reminder {
		c.idle.touch()
	}
	switch msg := ctx.Message().(type) {
	case *cluster.ClusterInit:
		c.name = msg.Identity.Identity
		c.opts = c.b.opts.Namespaces.For(c.name)
		c.epoch = newEpoch()
		c.b.metrics.Actors.WithLabelValues(ChannelKind).Inc()
		c.recoverSubscribers(ctx)
		c.idleWhenUnused(ctx)
	case *actor.Stopped:
		c.idle.cancel()
		c.b.metrics.Actors.WithLabelValues(ChannelKind).Dec()
		c.b.metrics.Subscriptions.Sub(float64(len(c.subscribers)))
	case *pb.Publish:
		c.publish(ctx, msg)
	case *pb.Subscribe:
		c.subscribe(ctx, msg)
	case *pb.Unsubscribe:
		c.unsubscribe(ctx, msg)
	case *pb.ListSubscribers:
		c.pruneDeadRelays(ctx)
		ctx.Respond(c.list())
	case *pb.QueryPresence:
		c.pruneDeadRelays(ctx)
		ctx.Respond(c.presence())
	case *pb.QueryHistory:
		ctx.Respond(c.historySince(msg.Since, msg.Limit))
	case *pb.ConfigureChannel:
		c.opts.Capacity = int(msg.Capacity)
		if msg.Capacity == 0 {
			c.opts.Capacity = c.b.opts.Namespaces.For(c.name).Capacity
		}
		c.configured = msg.Capacity != 0
		ctx.Respond(&pb.ChannelConfigured{})
		c.idleWhenUnused(ctx)
	case *pb.IdleCheck:
		c.trimHistory()
		c.idle.check(ctx, c.unused())
		if len(c.subscribers) == 0 && !c.configured && len(c.history) > 0 {
			// Kept for its history: look again when the oldest entry expires.
			c.idle.arm(ctx, time.Until(c.history[0].at.Add(c.opts.HistoryTTL))+time.Millisecond)
		}
	}
}

// recoverSubscribers rebuilds the subscriber set from the relays: an
// activation after a move or a node loss starts with everyone the nodes
// still deliver to, so no client has to subscribe again.
func (c *channel) recoverSubscribers(ctx actor.Context) {
	answers := c.b.askRelays(ctx, &pb.QueryChannelSubscribers{Channel: c.name}, relayTimeout)
	for address, answer := range answers {
		if res, ok := answer.(*pb.ChannelSubscribers); ok {
			for _, s := range res.Subscribers {
				c.add(s.ConnectionId, s.User, address, s.PresenceEvents, s.Info)
			}
		}
	}
}

// add registers a subscriber and reports whether its user just arrived.
func (c *channel) add(connectionID, user, relayAddress string, presence bool, info []byte) (*subscriber, bool) {
	if sub, known := c.subscribers[connectionID]; known {
		return sub, false
	}
	r := c.relays[relayAddress]
	if r == nil {
		r = &relayRef{pid: actor.NewPID(relayAddress, relayName)}
		c.relays[relayAddress] = r
	}
	r.subscribers++
	sub := &subscriber{user: user, relay: r, presence: presence || c.opts.Presence, info: info}
	c.subscribers[connectionID] = sub
	c.b.metrics.Subscriptions.Inc()
	m := c.users[user]
	arrived := m == nil
	if arrived {
		m = &member{}
		c.users[user] = m
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
	c.b.metrics.Subscriptions.Dec()
	if sub.relay.subscribers--; sub.relay.subscribers == 0 {
		delete(c.relays, sub.relay.pid.Address)
	}
	left := false
	if m := c.users[sub.user]; m != nil {
		if m.connections--; m.connections == 0 {
			delete(c.users, sub.user)
			left = true
		}
	}
	return sub, true, left
}

// pruneDeadRelays forgets subscribers on nodes that left the cluster.
func (c *channel) pruneDeadRelays(ctx actor.Context) {
	for address := range c.relays {
		if c.b.isAlive(address) {
			continue
		}
		for id, sub := range c.subscribers {
			if sub.relay.pid.Address == address {
				if _, _, left := c.remove(id); left {
					c.announce(ctx, transport.LeaveFrame(c.name, sub.user))
				}
			}
		}
	}
}

// announce sends a join or leave event to the subscribers that want them.
func (c *channel) announce(ctx actor.Context, frame []byte) {
	wanted := false
	for _, s := range c.subscribers {
		if s.presence {
			wanted = true
			break
		}
	}
	if !wanted {
		return
	}
	event := &pb.Delivery{Channel: c.name, Frame: frame, PresenceOnly: true}
	for _, r := range c.relays {
		ctx.Send(r.pid, event)
	}
}

func (c *channel) publish(ctx actor.Context, msg *pb.Publish) {
	if answer, done := c.retries.answered(msg.Publisher, msg.Sequence); done {
		ctx.Respond(answer)
		return
	}
	if msg.HasExpectOffset && msg.ExpectOffset != c.last {
		ctx.Respond(&pb.Published{Offset: c.last, Mismatch: true, Sequence: msg.Sequence})
		return
	}
	c.pruneDeadRelays(ctx)
	c.last++
	now := time.Now()
	frame := transport.MessageFrame(c.name, msg.User, msg.Data, c.last, c.epoch, now.UnixMilli())
	if c.opts.HistorySize > 0 {
		c.history = append(c.history, stored{offset: c.last, at: now, frame: frame})
		c.trimHistory()
	}
	delivery := &pb.Delivery{Channel: c.name, Frame: frame, ExcludeUser: msg.ExcludeUser}
	self := ctx.Self().Address
	for address, r := range c.relays {
		ctx.Send(r.pid, delivery)
		if address != self {
			c.b.metrics.RemoteDeliveries.Inc()
		}
	}
	c.b.metrics.Publications.Inc()
	answer := &pb.Published{Offset: c.last, Sequence: msg.Sequence}
	c.retries.remember(msg.Publisher, msg.Sequence, answer)
	ctx.Respond(answer)
	c.idleWhenUnused(ctx)
}

func (c *channel) subscribe(ctx actor.Context, msg *pb.Subscribe) {
	if sub, known := c.subscribers[msg.ConnectionId]; known && msg.Sequence != 0 && sub.sequence == msg.Sequence {
		ctx.Respond(&pb.Subscribed{Offset: c.last, Epoch: c.epoch}) // a retry: the reply frame went out already
		return
	}
	_, known := c.subscribers[msg.ConnectionId]
	if !known && c.opts.Capacity > 0 && c.users[msg.User] == nil && len(c.users) >= c.opts.Capacity {
		ctx.Respond(&pb.Subscribed{Offset: c.last, Epoch: c.epoch, RefusedCode: transport.CodeChannelFull,
			RefusedText: fmt.Sprintf("Channel %s is full: at most %d users", c.name, c.opts.Capacity)})
		return
	}
	sub, arrived := c.add(msg.ConnectionId, msg.User, msg.RelayAddress, msg.PresenceEvents, msg.Info)
	sub.sequence = msg.Sequence
	added := &pb.SubscriberAdded{Channel: c.name, ConnectionId: msg.ConnectionId, PresenceEvents: sub.presence, Info: sub.info}
	var recovered *bool
	if msg.Recover {
		ok, backlog := c.recover(msg.RecoverOffset, msg.RecoverEpoch)
		recovered, added.Backlog = &ok, backlog
	}
	added.Reply = transport.SubscribedFrame(c.name, c.last, c.epoch, recovered, msg.ReplyId)
	// The relay queues the reply and any backlog, so they precede every
	// later publication.
	ctx.Request(sub.relay.pid, added)
	if arrived {
		c.announce(ctx, transport.JoinFrame(c.name, msg.User, sub.info))
	}
	ctx.Respond(&pb.Subscribed{Offset: c.last, Epoch: c.epoch, Recovered: recovered != nil && *recovered})
}

// recover returns the stored publications after offset in epoch, if the
// history still holds every one of them.
func (c *channel) recover(offset uint64, epoch string) (bool, [][]byte) {
	if epoch != c.epoch || offset > c.last {
		return false, nil
	}
	if offset == c.last {
		return true, nil
	}
	c.trimHistory()
	if len(c.history) == 0 || c.history[0].offset > offset+1 {
		return false, nil
	}
	var backlog [][]byte
	for _, s := range c.history {
		if s.offset > offset {
			backlog = append(backlog, s.frame)
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
func (c *channel) trimHistory() {
	if over := len(c.history) - c.opts.HistorySize; over > 0 {
		c.history = append(c.history[:0], c.history[over:]...)
	}
	cutoff := time.Now().Add(-c.opts.HistoryTTL)
	drop := 0
	for drop < len(c.history) && c.history[drop].at.Before(cutoff) {
		drop++
	}
	if drop > 0 {
		c.history = append(c.history[:0], c.history[drop:]...)
	}
}

func (c *channel) historySince(since uint64, limit uint32) *pb.History {
	c.trimHistory()
	res := &pb.History{Offset: c.last, Epoch: c.epoch}
	for _, s := range c.history {
		if s.offset > since {
			res.Frames = append(res.Frames, s.frame)
			if limit > 0 && len(res.Frames) == int(limit) {
				break
			}
		}
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
		c.idle.arm(ctx, c.b.opts.GrainIdleTimeout)
	}
}

func (c *channel) list() *pb.SubscriberList {
	users := make([]string, 0, len(c.users))
	for u := range c.users {
		users = append(users, u)
	}
	sort.Strings(users)
	return &pb.SubscriberList{Users: users, Subscriptions: uint32(len(c.subscribers))}
}

func (c *channel) presence() *pb.Presence {
	res := &pb.Presence{}
	for u, m := range c.users {
		res.Members = append(res.Members, &pb.Presence_Member{User: u, Connections: uint32(m.connections), Info: m.info})
	}
	sort.Slice(res.Members, func(i, j int) bool { return res.Members[i].User < res.Members[j].User })
	return res
}

func newEpoch() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
