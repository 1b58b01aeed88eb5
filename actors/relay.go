package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// localConnections maps this node's connection ids to their outboxes and
// actors. Connection actors add and remove themselves; the relay reads it.
type localConnections struct {
	mu     sync.RWMutex
	byID   map[string]*localConnection
	byUser map[string]map[string]*localConnection
}

type localConnection struct {
	out *transport.Outbox
	pid *actor.PID
}

func newLocalConnections() *localConnections {
	return &localConnections{byID: map[string]*localConnection{}, byUser: map[string]map[string]*localConnection{}}
}

func (l *localConnections) add(out *transport.Outbox, pid *actor.PID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &localConnection{out: out, pid: pid}
	l.byID[out.ID] = c
	if l.byUser[out.User] == nil {
		l.byUser[out.User] = map[string]*localConnection{}
	}
	l.byUser[out.User][out.ID] = c
}

func (l *localConnections) remove(out *transport.Outbox) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byID, out.ID)
	if conns := l.byUser[out.User]; conns != nil {
		delete(conns, out.ID)
		if len(conns) == 0 {
			delete(l.byUser, out.User)
		}
	}
}

func (l *localConnections) get(id string) *transport.Outbox {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if c := l.byID[id]; c != nil {
		return c.out
	}
	return nil
}

func (l *localConnections) ofUser(user string) *pb.UserConnections {
	l.mu.RLock()
	defer l.mu.RUnlock()
	res := &pb.UserConnections{}
	for id, c := range l.byUser[user] {
		res.Connections = append(res.Connections, &pb.UserConnections_Connection{ConnectionId: id, ActorId: c.pid.Id})
	}
	return res
}

func (l *localConnections) count() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.byID)
}

func (l *localConnections) each(f func(*transport.Outbox)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, c := range l.byID {
		f(c.out)
	}
}

// relay is the node's fan-out point: a channel grain sends it one Delivery
// per publication, already encoded, and the relay queues those same bytes
// on every local subscriber's outbox. Channel grains talk to relays only,
// so a publication crosses the network once per node, not per subscriber.
type relay struct {
	b        *Broker
	channels map[string]map[string]*relayed // channel → connection id → subscription
	joined   map[string][]string            // connection id → its channels here
}

// relayed is one local subscription, with what a re-activated channel
// needs to know of it.
type relayed struct {
	out      *transport.Outbox
	presence bool
	info     []byte
}

func newRelay(b *Broker) *relay {
	return &relay{b: b, channels: make(map[string]map[string]*relayed), joined: make(map[string][]string)}
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
		for id, sub := range r.channels[msg.Channel] {
			res.Subscribers = append(res.Subscribers, &pb.ChannelSubscribers_Subscriber{
				ConnectionId: id, User: sub.out.User, PresenceEvents: sub.presence, Info: sub.info})
		}
		ctx.Respond(res)
	case *pb.QueryUserConnections:
		ctx.Respond(r.b.local.ofUser(msg.User))
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
	n := 0
	for _, sub := range r.channels[d.Channel] {
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
	subs := r.channels[msg.Channel]
	if subs == nil {
		subs = make(map[string]*relayed)
		r.channels[msg.Channel] = subs
	}
	if _, already := subs[msg.ConnectionId]; !already {
		r.joined[msg.ConnectionId] = append(r.joined[msg.ConnectionId], msg.Channel)
	}
	subs[msg.ConnectionId] = &relayed{out: out, presence: msg.PresenceEvents, info: msg.Info}
	if len(msg.Reply) > 0 {
		out.Push(msg.Reply)
	}
	for _, frame := range msg.Backlog {
		out.Push(frame)
	}
	return true
}

func (r *relay) remove(channel, connectionID string) {
	subs := r.channels[channel]
	if _, ok := subs[connectionID]; !ok {
		return
	}
	delete(subs, connectionID)
	if len(subs) == 0 {
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
