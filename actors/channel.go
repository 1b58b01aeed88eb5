package actors

import (
	"crypto/rand"
	"encoding/hex"
	"sort"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// channel is the grain for one channel: the single sequencer of its
// publications and the owner of its subscriber set. It encodes each
// publication once and hands the bytes to one relay per node.
type channel struct {
	b     *Broker
	name  string
	epoch string // changes whenever this channel's history is lost
	last  uint64 // offset of the latest publication

	subscribers map[string]subscriber // connection id → subscriber
	relays      map[string]*relayRef  // relay address → relay
	idle        passivation
	retries     retries
}

type subscriber struct {
	user     string
	relay    *relayRef
	sequence uint64 // of the Subscribe that added it
}

type relayRef struct {
	pid         *actor.PID
	subscribers int
}

func newChannel(b *Broker) *channel {
	return &channel{b: b, subscribers: make(map[string]subscriber), relays: make(map[string]*relayRef), idle: passivation{idle: b.opts.GrainIdleTimeout}}
}

func (c *channel) Receive(ctx actor.Context) {
	if _, reminder := ctx.Message().(*pb.IdleCheck); !reminder {
		c.idle.touch()
	}
	switch msg := ctx.Message().(type) {
	case *cluster.ClusterInit:
		c.name = msg.Identity.Identity
		c.epoch = newEpoch()
		c.b.metrics.Actors.WithLabelValues(ChannelKind).Inc()
		c.recoverSubscribers(ctx)
		c.idleWhenEmpty(ctx)
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
		c.pruneDeadRelays()
		ctx.Respond(c.list())
	case *pb.IdleCheck:
		c.idle.check(ctx, len(c.subscribers) == 0)
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
				c.add(s.ConnectionId, s.User, address)
			}
		}
	}
}

func (c *channel) add(connectionID, user, relayAddress string) subscriber {
	if sub, known := c.subscribers[connectionID]; known {
		return sub
	}
	r := c.relays[relayAddress]
	if r == nil {
		r = &relayRef{pid: actor.NewPID(relayAddress, relayName)}
		c.relays[relayAddress] = r
	}
	r.subscribers++
	sub := subscriber{user: user, relay: r}
	c.subscribers[connectionID] = sub
	c.b.metrics.Subscriptions.Inc()
	return sub
}

func (c *channel) remove(connectionID string) (subscriber, bool) {
	sub, ok := c.subscribers[connectionID]
	if !ok {
		return sub, false
	}
	delete(c.subscribers, connectionID)
	c.b.metrics.Subscriptions.Dec()
	if sub.relay.subscribers--; sub.relay.subscribers == 0 {
		delete(c.relays, sub.relay.pid.Address)
	}
	return sub, true
}

// pruneDeadRelays forgets subscribers on nodes that left the cluster.
func (c *channel) pruneDeadRelays() {
	for address := range c.relays {
		if c.b.isAlive(address) {
			continue
		}
		for id, sub := range c.subscribers {
			if sub.relay.pid.Address == address {
				c.remove(id)
			}
		}
	}
}

func (c *channel) publish(ctx actor.Context, msg *pb.Publish) {
	if answer, done := c.retries.answered(msg.Publisher, msg.Sequence); done {
		ctx.Respond(answer)
		return
	}
	c.pruneDeadRelays()
	c.last++
	delivery := &pb.Delivery{
		Channel:     c.name,
		Frame:       transport.MessageFrame(c.name, msg.User, msg.Data, c.last, nowMillis()),
		ExcludeUser: msg.ExcludeUser,
	}
	self := ctx.Self().Address
	for address, r := range c.relays {
		ctx.Send(r.pid, delivery)
		if address != self {
			c.b.metrics.RemoteDeliveries.Inc()
		}
	}
	c.b.metrics.Publications.Inc()
	answer := &pb.Published{Offset: c.last}
	c.retries.remember(msg.Publisher, msg.Sequence, answer)
	ctx.Respond(answer)
}

func (c *channel) subscribe(ctx actor.Context, msg *pb.Subscribe) {
	if sub, known := c.subscribers[msg.ConnectionId]; known && msg.Sequence != 0 && sub.sequence == msg.Sequence {
		ctx.Respond(&pb.Subscribed{Offset: c.last, Epoch: c.epoch}) // a retry: the reply frame went out already
		return
	}
	sub := c.add(msg.ConnectionId, msg.User, msg.RelayAddress)
	sub.sequence = msg.Sequence
	c.subscribers[msg.ConnectionId] = sub
	// The relay queues the reply, so it precedes every later publication.
	ctx.Request(sub.relay.pid, &pb.SubscriberAdded{
		Channel:      c.name,
		ConnectionId: msg.ConnectionId,
		Reply:        transport.SubscribedFrame(c.name, c.last, c.epoch, msg.ReplyId),
	})
	ctx.Respond(&pb.Subscribed{Offset: c.last, Epoch: c.epoch})
}

func (c *channel) unsubscribe(ctx actor.Context, msg *pb.Unsubscribe) {
	sub, removed := c.remove(msg.ConnectionId)
	if removed {
		notice := &pb.SubscriberRemoved{Channel: c.name, ConnectionId: msg.ConnectionId}
		if msg.Reply {
			notice.Reply = transport.UnsubscribedFrame(c.name, msg.ReplyId)
		}
		ctx.Send(sub.relay.pid, notice)
		c.idleWhenEmpty(ctx)
	}
	if ctx.Sender() != nil {
		ctx.Respond(&pb.Unsubscribed{Removed: removed})
	}
}

// idleWhenEmpty arms passivation once nobody listens.
func (c *channel) idleWhenEmpty(ctx actor.Context) {
	if len(c.subscribers) == 0 {
		c.idle.arm(ctx, c.b.opts.GrainIdleTimeout)
	}
}

func (c *channel) list() *pb.SubscriberList {
	seen := make(map[string]struct{}, len(c.subscribers))
	users := make([]string, 0, len(c.subscribers))
	for _, s := range c.subscribers {
		if _, dup := seen[s.user]; !dup {
			seen[s.user] = struct{}{}
			users = append(users, s.user)
		}
	}
	sort.Strings(users)
	return &pb.SubscriberList{Users: users, Subscriptions: uint32(len(c.subscribers))}
}

func newEpoch() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
