package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// localConnections maps this node's connection ids to their outboxes.
// Connection actors add and remove themselves; the relay looks them up.
type localConnections struct {
	mu   sync.RWMutex
	byID map[string]*transport.Outbox
}

func newLocalConnections() *localConnections {
	return &localConnections{byID: make(map[string]*transport.Outbox)}
}

func (l *localConnections) add(out *transport.Outbox) {
	l.mu.Lock()
	l.byID[out.ID] = out
	l.mu.Unlock()
}

func (l *localConnections) remove(id string) {
	l.mu.Lock()
	delete(l.byID, id)
	l.mu.Unlock()
}

func (l *localConnections) get(id string) *transport.Outbox {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.byID[id]
}

func (l *localConnections) count() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.byID)
}

func (l *localConnections) each(f func(*transport.Outbox)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, out := range l.byID {
		f(out)
	}
}

// relay is the node's fan-out point: a channel grain sends it one Delivery
// per publication, already encoded, and the relay queues those same bytes
// on every local subscriber's outbox. Channel grains talk to relays only,
// so a publication crosses the network once per node, not per subscriber.
type relay struct {
	b        *Broker
	channels map[string]map[string]*transport.Outbox // channel → connection id → outbox
	joined   map[string][]string                     // connection id → its channels here
}

func newRelay(b *Broker) *relay {
	return &relay{b: b, channels: make(map[string]map[string]*transport.Outbox), joined: make(map[string][]string)}
}

func (r *relay) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *pb.Delivery:
		r.deliver(msg)
	case *pb.SubscriberAdded:
		r.add(msg)
	case *pb.SubscriberRemoved:
		r.remove(msg.Channel, msg.ConnectionId)
		if len(msg.Reply) > 0 {
			if out := r.b.local.get(msg.ConnectionId); out != nil {
				out.Push(msg.Reply)
			}
		}
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
	for _, out := range r.channels[d.Channel] {
		if d.ExcludeUser != "" && out.User == d.ExcludeUser {
			continue
		}
		if out.Push(d.Frame) {
			n++
		}
	}
	r.b.metrics.Deliveries.Add(float64(n))
}

func (r *relay) add(msg *pb.SubscriberAdded) {
	out := r.b.local.get(msg.ConnectionId)
	if out == nil {
		return // closed meanwhile; its actor unsubscribes on the way out
	}
	subs := r.channels[msg.Channel]
	if subs == nil {
		subs = make(map[string]*transport.Outbox)
		r.channels[msg.Channel] = subs
	}
	if _, already := subs[msg.ConnectionId]; !already {
		subs[msg.ConnectionId] = out
		r.joined[msg.ConnectionId] = append(r.joined[msg.ConnectionId], msg.Channel)
	}
	out.Push(msg.Reply)
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
