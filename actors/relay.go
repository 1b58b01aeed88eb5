package actors

import (
	"math"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// relay is the node's fan-out point: a channel grain sends it one Delivery
// per publication, already encoded, and the relay queues those same bytes
// on every local subscriber's outbox. Channel grains talk to relays only,
// so a publication crosses the network once per node, not per subscriber.
type relay struct {
	broker   *Broker
	channels map[string]*relayedChannel // channel → its local subscriptions
	joined   map[string][]string        // connection id → its channels here
}

// relayedChannel is a channel's local subscriptions: a slice to deliver
// to (walking it is what every publication costs), indexed by connection;
// and where its stream stands here: the activation it follows (term and
// epoch) and the last offset delivered.
type relayedChannel struct {
	subs  []relayed
	index map[string]int // connection id → position in subs
	term  uint64
	epoch string
	last  uint64
}

// relayed is one local subscription, with what a re-activated channel
// needs to know of it.
type relayed struct {
	id       string
	out      *client
	presence bool
	info     []byte
}

func newRelay(b *Broker) *relay {
	return &relay{broker: b, channels: make(map[string]*relayedChannel), joined: make(map[string][]string)}
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
			if out := r.broker.local.get(msg.ConnectionId); out != nil {
				out.Push(msg.Reply)
			}
		}
	case *pb.QueryHistory:
		r.history(ctx, msg)
	case *pb.QueryChannelSubscribers:
		ctx.Respond(r.announced(msg))
	case *pb.HandOver:
		r.handOver(ctx, msg)
	case *pb.FollowChannel:
		r.followChannel(msg)
	case *pb.QueryUserConnections:
		var res *pb.UserConnections
		if msg.WatcherId == "" {
			res = r.broker.local.ofUser(msg.User)
		} else {
			watcher := sessionWatch{pid: actor.NewPID(msg.WatcherAddress, msg.WatcherId), activation: msg.Activation}
			res = r.broker.local.watch(msg.User, watcher)
		}
		res.Member = r.broker.system.ID
		ctx.Respond(res)
	case *pb.Unwatch:
		r.broker.local.unwatch(msg.User, msg.Activation)
	case *pb.ConnectionClosed:
		for _, channel := range r.joined[msg.ConnectionId] {
			r.remove(channel, msg.ConnectionId)
		}
	case *pb.Broadcast:
		n := 0
		r.broker.local.each(func(out *client) {
			if out.Push(msg.Frame) {
				n++
			}
		})
		r.broker.metrics.Deliveries.Add(float64(n))
		ctx.Respond(&pb.Broadcasted{Connections: uint32(n)})
	}
}

// announced answers a new activation of a channel with the local
// subscribers it should deliver to, unless an activation placed under a
// newer member list has announced itself here already (stale). A local
// activation placed under an older list stands down from now on, and the
// answer names it (predecessor) so the new one can take its state over.
func (r *relay) announced(q *pb.QueryChannelSubscribers) *pb.ChannelSubscribers {
	res := &pb.ChannelSubscribers{Member: r.broker.system.ID}
	ch := r.channels[q.Channel]
	newer, older, olderTerm := r.broker.fenceBy(ChannelKind, q.Channel, q.Term)
	if newer || (ch != nil && ch.term > q.Term) {
		res.Stale = true
		return res
	}
	if older {
		res.Predecessor, res.PredecessorTerm = true, olderTerm
	} else if term, ok := r.broker.handoffs.holds(q.Channel, q.Term); ok {
		res.Predecessor, res.PredecessorTerm = true, term
	}
	res.ReplicaTerm, res.ReplicaOffset, res.Replica = r.broker.replicas.standing(q.Channel)
	if ch == nil {
		return res
	}
	res.Epoch, res.LastOffset = ch.epoch, ch.last
	for _, sub := range ch.subs {
		res.Subscribers = append(res.Subscribers, &pb.ChannelSubscribers_Subscriber{
			ConnectionId: sub.id, User: sub.out.User, PresenceEvents: sub.presence, Info: sub.info})
	}
	return res
}

// history answers a history request for a channel this node owns
// without activating it: the active channel answers, and a channel that
// is not active here and left no state here has no history. Otherwise
// (its state waits here, or it belongs elsewhere) the asker asks the
// channel itself.
func (r *relay) history(ctx actor.Context, q *pb.QueryHistory) {
	if p := r.broker.activeHere(ChannelKind, q.Channel); p != nil && !p.moved.Load() {
		ctx.Forward(p.pid)
		return
	}
	_, _, replica := r.broker.replicas.standing(q.Channel)
	_, stashed := r.broker.handoffs.holds(q.Channel, math.MaxUint64)
	if replica || stashed || !r.broker.view.Load().owns(ChannelKind, q.Channel) || !r.broker.membership.Certain() {
		ctx.Respond(&pb.Moved{})
		return
	}
	ctx.Respond(&pb.History{})
}

// handOver passes a new activation's request for the channel's state on
// to the older activation here (which answers it directly), or answers
// with the state it left or the replica kept here, or that there is none.
func (r *relay) handOver(ctx actor.Context, msg *pb.HandOver) {
	if msg.FromReplica {
		ctx.Respond(r.broker.replicas.handOver(msg.Channel, msg.Term))
		return
	}
	if p := r.broker.activeHere(ChannelKind, msg.Channel); p != nil && p.term < msg.Term && p.served.Load() {
		p.moved.Store(true)
		ctx.Forward(p.pid)
		return
	}
	if state := r.broker.handoffs.take(msg.Channel, msg.Term); state != nil {
		ctx.Respond(state)
		return
	}
	ctx.Respond(&pb.ChannelState{})
}

// followChannel makes the channel's stream here follow a new activation
// from where it starts. In the same epoch (the state was handed over, or
// taken from a replica) the publications the predecessor had not
// delivered here come with it, and any of its last deliveries still on
// their way are dropped as duplicates; under a new epoch the subscribers
// are told their stream jumped.
func (r *relay) followChannel(f *pb.FollowChannel) {
	ch := r.channels[f.Channel]
	if ch == nil || f.Term < ch.term {
		return
	}
	ch.term = f.Term
	if f.Epoch != ch.epoch {
		r.jump(f.Channel, ch, f.Epoch, f.Offset)
		return
	}
	for _, d := range f.Missed {
		r.deliver(d)
	}
}

// jump tells local subscribers that the channel's stream continues after
// offset of epoch, and follows it from there.
func (r *relay) jump(channel string, ch *relayedChannel, epoch string, offset uint64) {
	ch.epoch, ch.last = epoch, offset
	r.broker.metrics.DeliveryGaps.Inc()
	gap := transport.GapFrame(channel, epoch, offset)
	for i := range ch.subs {
		ch.subs[i].out.Push(gap)
	}
}

// deliver queues a publication on the channel's local subscribers. It
// keeps the stream whole: a publication the relay has (or an older
// activation's, once a newer one took over) is dropped and counted, a
// jump in offsets or epochs is announced with a gap frame first, and the
// connections of a user the publication excludes get a skip frame.
func (r *relay) deliver(d *pb.Delivery) {
	ch := r.channels[d.Channel]
	if ch == nil {
		return
	}
	if d.Offset != 0 {
		switch {
		case d.Epoch == ch.epoch && d.Offset <= ch.last, d.Epoch != ch.epoch && d.Term < ch.term:
			r.broker.metrics.StaleDeliveries.Inc()
			return
		case d.Epoch != ch.epoch || d.Offset != ch.last+1:
			// Offsets lost on the way (a stream between nodes torn down),
			// or an activation this relay was not told of.
			r.jump(d.Channel, ch, d.Epoch, d.Offset-1)
		}
		ch.term, ch.last = max(ch.term, d.Term), d.Offset
	}
	n := 0
	var skip []byte // what the excluded user gets instead: encoded once, if they are here
	for i := range ch.subs {
		sub := &ch.subs[i]
		if d.PresenceOnly && !sub.presence {
			continue
		}
		if d.ExcludeUser != "" && sub.out.User == d.ExcludeUser {
			if skip == nil {
				skip = transport.SkipFrame(d.Channel, d.Epoch, d.Offset)
			}
			sub.out.Push(skip)
			continue
		}
		if sub.out.Push(d.Frame) {
			n++
		}
	}
	r.broker.metrics.Deliveries.Add(float64(n))
}

func (r *relay) add(msg *pb.SubscriberAdded) bool {
	out := r.broker.local.get(msg.ConnectionId)
	if out == nil {
		return false
	}
	ch := r.channels[msg.Channel]
	if ch == nil {
		ch = &relayedChannel{index: make(map[string]int), term: msg.Term, epoch: msg.Epoch, last: msg.Offset}
		r.channels[msg.Channel] = ch
	} else if msg.Term > ch.term && msg.Epoch != ch.epoch {
		ch.term = msg.Term
		r.jump(msg.Channel, ch, msg.Epoch, msg.Offset)
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
