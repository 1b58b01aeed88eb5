package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// relay is the node's fan-out point: a channel grain sends it one Delivery
// per publication, already encoded, and the relay queues those same bytes
// on every local subscriber's outbox. Channel grains talk to relays only,
// so a publication crosses the network once per node, not per subscriber.
type relay struct {
	b        *Broker
	channels map[string]*relayedChannel // channel → its local subscriptions
	joined   map[string][]string        // connection id → its channels here
}

// relayedChannel is a channel's local subscriptions: a slice to deliver
// to (walking it is what every publication costs), indexed by connection.
type relayedChannel struct {
	subs  []relayed
	index map[string]int // connection id → position in subs
}

// relayed is one local subscription, with what a re-activated channel
// needs to know of it.
type relayed struct {
	id       string
	out      *transport.Outbox
	presence bool
	info     []byte
}

func newRelay(b *Broker) *relay {
	return &relay{b: b, channels: make(map[string]*relayedChannel), joined: make(map[string][]string)}
}

func (r *relay) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *pb.Delivery:
		r.deliver(msg)
	case *pb.SubscriberAdded:
		if !r.add(msg) && ctx.Sender() != nil {
			// Closed meanwhile: tell the channel, whose unsubscribe may have raced past.
			ctx.Send(ctx.Sender(), &pb.Unsubscribe{Channel: msg.Channel, ConnectionId: msg.ConnectionId})
		}
	case *pb.SubscriberRemoved:
		r.remove(msg.Channel, msg.ConnectionId)
		if len(msg.Reply) > 0 {
			if out := r.b.local.get(msg.ConnectionId); out != nil {
				out.Push(msg.Reply)
			}
		}
	case *pb.QueryChannelSubscribers:
		res := &pb.ChannelSubscribers{}
		if ch := r.channels[msg.Channel]; ch != nil {
			for _, sub := range ch.subs {
				res.Subscribers = append(res.Subscribers, &pb.ChannelSubscribers_Subscriber{
					ConnectionId: sub.id, User: sub.out.User, PresenceEvents: sub.presence, Info: sub.info})
			}
		}
		ctx.Respond(res)
	case *pb.QueryUserConnections:
		if msg.WatcherId == "" {
			ctx.Respond(r.b.local.ofUser(msg.User))
			return
		}
		watcher := sessionWatch{pid: actor.NewPID(msg.WatcherAddress, msg.WatcherId), activation: msg.Activation}
		ctx.Respond(r.b.local.watch(msg.User, watcher))
	case *pb.Unwatch:
		r.b.local.unwatch(msg.User, msg.Activation)
	case *pb.ConnectionClosed:
		for _, channel := range r.joined[msg.ConnectionId] {
			r.remove(channel, msg.ConnectionId)
		}
	case *pb.Broadcast:
		n := 0
		r.b.local.each(func(out *transport.Outbox) {
			if out.Push(msg.Frame) {
				n++
			}
		})
		r.b.metrics.Deliveries.Add(float64(n))
		ctx.Respond(&pb.SentToUser{Connections: uint32(n)})
	}
}

func (r *relay) deliver(d *pb.Delivery) {
	ch := r.channels[d.Channel]
	if ch == nil {
		return
	}
	n := 0
	for i := range ch.subs {
		sub := &ch.subs[i]
		if (d.PresenceOnly && !sub.presence) || (d.ExcludeUser != "" && sub.out.User == d.ExcludeUser) {
			continue
		}
		if sub.out.Push(d.Frame) {
			n++
		}
	}
	r.b.metrics.Deliveries.Add(float64(n))
}

func (r *relay) add(msg *pb.SubscriberAdded) bool {
	out := r.b.local.get(msg.ConnectionId)
	if out == nil {
		return false
	}
	ch := r.channels[msg.Channel]
	if ch == nil {
		ch = &relayedChannel{index: make(map[string]int)}
		r.channels[msg.Channel] = ch
	}
	sub := relayed{id: msg.ConnectionId, out: out, presence: msg.PresenceEvents, info: msg.Info}
	if i, already := ch.index[msg.ConnectionId]; already {
		ch.subs[i] = sub
	} else {
		ch.index[msg.ConnectionId] = len(ch.subs)
		ch.subs = append(ch.subs, sub)
		r.joined[msg.ConnectionId] = append(r.joined[msg.ConnectionId], msg.Channel)
	}
	if len(msg.Reply) > 0 {
		out.Push(msg.Reply)
	}
	for _, frame := range msg.Backlog {
		out.Push(frame)
	}
	return true
}

func (r *relay) remove(channel, connectionID string) {
	ch := r.channels[channel]
	if ch == nil {
		return
	}
	i, ok := ch.index[connectionID]
	if !ok {
		return
	}
	last := len(ch.subs) - 1
	if i != last {
		ch.subs[i] = ch.subs[last]
		ch.index[ch.subs[i].id] = i
	}
	ch.subs[last] = relayed{}
	ch.subs = ch.subs[:last]
	delete(ch.index, connectionID)
	if len(ch.subs) == 0 {
		delete(r.channels, channel)
	}
	joined := r.joined[connectionID]
	for i, c := range joined {
		if c == channel {
			joined[i] = joined[len(joined)-1]
			joined = joined[:len(joined)-1]
			break
		}
	}
	if len(joined) == 0 {
		delete(r.joined, connectionID)
	} else {
		r.joined[connectionID] = joined
	}
}
