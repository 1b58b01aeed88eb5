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
}

type subscriber struct {
	user  string
	relay *relayRef
}

type relayRef struct {
	pid         *actor.PID
	subscribers int
}

func newChannel(b *Broker) *channel {
	return &channel{b: b, subscribers: make(map[string]subscriber), relays: make(map[string]*relayRef)}
}

func (c *channel) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *cluster.ClusterInit:
		c.name = msg.Identity.Identity
		c.epoch = newEpoch()
		c.b.metrics.Actors.WithLabelValues(ChannelKind).Inc()
		c.idleWhenEmpty(ctx)
	case *actor.Stopped:
		c.b.metrics.Actors.WithLabelValues(ChannelKind).Dec()
		c.b.metrics.Subscriptions.Sub(float64(len(c.subscribers)))
	case *pb.Publish:
		c.publish(ctx, msg)
	case *pb.Subscribe:
		c.subscribe(ctx, msg)
	case *pb.Unsubscribe:
		c.unsubscribe(ctx, msg)
	case *pb.ListSubscribers:
		ctx.Respond(c.list())
	case *actor.ReceiveTimeout:
		if len(c.subscribers) == 0 {
			ctx.Stop(ctx.Self())
		}
	}
}

func (c *channel) publish(ctx actor.Context, msg *pb.Publish) {
	c.last++
	delivery := &pb.Delivery{
		Channel:     c.name,
		Frame:       transport.MessageFrame(c.name, msg.User, msg.Data, c.last, nowMillis()),
		ExcludeUser: msg.ExcludeUser,
	}
	for _, r := range c.relays {
		ctx.Send(r.pid, delivery)
	}
	c.b.metrics.Publications.Inc()
	ctx.Respond(&pb.Published{Offset: c.last})
}

func (c *channel) subscribe(ctx actor.Context, msg *pb.Subscribe) {
	sub, known := c.subscribers[msg.ConnectionId]
	if !known {
		r := c.relays[msg.RelayAddress]
		if r == nil {
			r = &relayRef{pid: actor.NewPID(msg.RelayAddress, relayName)}
			c.relays[msg.RelayAddress] = r
		}
		r.subscribers++
		sub = subscriber{user: msg.User, relay: r}
		c.subscribers[msg.ConnectionId] = sub
		c.b.metrics.Subscriptions.Inc()
		ctx.SetReceiveTimeout(0)
	}
	// The relay queues the reply, so it precedes every later publication.
	ctx.Send(sub.relay.pid, &pb.SubscriberAdded{
		Channel:      c.name,
		ConnectionId: msg.ConnectionId,
		Reply:        transport.SubscribedFrame(c.name, c.last, c.epoch, msg.ReplyId),
	})
	ctx.Respond(&pb.Subscribed{Offset: c.last, Epoch: c.epoch})
}

func (c *channel) unsubscribe(ctx actor.Context, msg *pb.Unsubscribe) {
	removed := &pb.SubscriberRemoved{Channel: c.name, ConnectionId: msg.ConnectionId}
	if msg.Reply {
		removed.Reply = transport.UnsubscribedFrame(c.name, msg.ReplyId)
	}
	sub, ok := c.subscribers[msg.ConnectionId]
	if ok {
		delete(c.subscribers, msg.ConnectionId)
		c.b.metrics.Subscriptions.Dec()
		ctx.Send(sub.relay.pid, removed)
		sub.relay.subscribers--
		if sub.relay.subscribers == 0 {
			delete(c.relays, sub.relay.pid.Address)
		}
		c.idleWhenEmpty(ctx)
	}
	if ctx.Sender() != nil {
		ctx.Respond(&pb.Unsubscribed{Removed: ok})
	}
}

// idleWhenEmpty arms passivation once nobody listens.
func (c *channel) idleWhenEmpty(ctx actor.Context) {
	if len(c.subscribers) == 0 {
		ctx.SetReceiveTimeout(c.b.opts.GrainIdleTimeout)
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
