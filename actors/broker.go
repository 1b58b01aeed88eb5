package actors

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	sbcluster "github.com/switchboard/switchboard/cluster"
	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// Grain kinds, as the cluster knows them.
const (
	ChannelKind = "channel"
	SessionKind = "session"
	relayName   = "relay"
)

// Options tune the broker's actors.
type Options struct {
	// RequestTimeout bounds a call from a connection to a grain.
	RequestTimeout time.Duration
	// GrainIdleTimeout is how long a channel without subscribers, or a
	// session without connections, stays active before it passivates.
	GrainIdleTimeout time.Duration
	// MaxSubscriptions bounds one connection's channels; 0: no limit.
	MaxSubscriptions int
	// MaxConnectionsPerUser bounds a user's connections across the
	// cluster; 0: no limit.
	MaxConnectionsPerUser int
	// Namespaces give channels history, presence events and capacity.
	Namespaces Namespaces
	// ChannelReplicas is how many other members keep a copy of each
	// channel's state (when that many others serve); 0: none.
	ChannelReplicas int
	// LookupRate bounds, per second, the grains this node looks up without
	// knowing where they are (each may be activated, asking every node),
	// with bursts of LookupBurst; 0: no bound.
	LookupRate  float64
	LookupBurst int
	// MemberLossDetection is how long a dead member may take to be noticed
	// (the cluster lease); 0 for a single node. A publication that may
	// have been sequenced waits this much longer for its answer, so that
	// a failover can end before it is answered outcome_unknown.
	MemberLossDetection time.Duration
}

// Broker wires actors to the cluster and offers the backend operations.
type Broker struct {
	opts    Options
	metrics *transport.Metrics
	log     *slog.Logger

	system     *actor.ActorSystem
	cluster    *cluster.Cluster
	membership Membership
	relay      *actor.PID
	local      *localConnections
	view       atomic.Pointer[view]
	departed   departedMembers

	placements  sync.Map // kind/identity → *placement of the grain active on this node
	handoffs    handoffs
	replicas    replicas
	pids        atomic.Pointer[pidCache]
	activations atomic.Uint64
	lookups     *transport.RateBudget
	// this node's replica actor, through which channels replicate
	replicaRouter *actor.PID
}

var _ transport.Connector = (*Broker)(nil)
var _ transport.Backend = (*Broker)(nil)

func NewBroker(opts Options, metrics *transport.Metrics, log *slog.Logger) *Broker {
	return &Broker{opts: opts, metrics: metrics, log: log, local: newLocalConnections(),
		lookups: transport.NewRateBudget(opts.LookupRate, opts.LookupBurst)}
}

// Kinds are the grain kinds this broker hosts; register them with the
// cluster before it starts.
func (b *Broker) Kinds() []*cluster.Kind {
	return []*cluster.Kind{
		cluster.NewKind(ChannelKind, actor.PropsFromProducer(func() actor.Actor { return newChannel(b) })),
		cluster.NewKind(SessionKind, actor.PropsFromProducer(func() actor.Actor { return newSession(b) })),
	}
}

// Start binds the broker to a started cluster member, whose standing
// membership reports, and spawns its relay.
func (b *Broker) Start(c *cluster.Cluster, membership Membership) error {
	b.cluster = c
	b.system = c.ActorSystem
	b.membership = membership
	b.pids.Store(&pidCache{})
	pid, err := b.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newRelay(b) }), relayName)
	if err != nil {
		return fmt.Errorf("spawn relay: %w", err)
	}
	b.relay = pid
	if b.replicaRouter, err = b.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newReplica(b) }), replicaName); err != nil {
		return fmt.Errorf("spawn replica: %w", err)
	}
	b.updateMembers(membership.Term(), c.MemberList.Members().Members(), nil)
	c.ActorSystem.EventStream.Subscribe(func(evt any) {
		if changed, ok := evt.(*sbcluster.MembersChanged); ok {
			b.updateMembers(changed.Term, changed.Serving, changed.Draining)
		}
	})
	return nil
}

// updateMembers makes the member list of term the one in force. It runs
// on every change, in order, once protoactor holds the new topology of
// the members that own grains, and before any grain sees the list: caches
// of where grains live start afresh, activations that no longer own their
// identity are marked moved at once, and grains forget the subscribers and
// connections of members that left. Draining members own nothing but
// still hold connections, and their relays still answer.
func (b *Broker) updateMembers(term uint64, serving []*cluster.Member, draining map[string]string) {
	next := &view{term: term, self: b.system.Address(), members: make(map[string]string, len(serving)+len(draining))}
	for _, m := range serving {
		next.members[m.Address()] = m.Id
		next.serving = append(next.serving, m.Address())
	}
	next.owners = sbcluster.NewPlacement(next.serving)
	for address, id := range draining {
		next.members[address] = id
	}
	before := b.view.Swap(next)
	b.pids.Store(&pidCache{view: next})
	b.metrics.ClusterMembers.Set(float64(len(next.members)))
	if before == nil {
		return
	}
	left := &pb.MembersLeft{}
	gone := map[string]struct{}{}
	for address, id := range before.members {
		if next.members[address] != id {
			left.Members = append(left.Members, id)
			gone[address] = struct{}{}
			b.departed.add(id)
		}
	}
	if len(gone) > 0 {
		b.local.forgetWatchesAt(gone)
		if orphans := b.replicas.orphans(gone); len(orphans) > 0 {
			// Their owner died: wake them at their new owner (this node, as
			// a rule), so it takes the copy over and their subscribers get
			// what they missed now, not at the channel's next use.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*b.opts.RequestTimeout)
				defer cancel()
				b.wakeAll(ctx, orphans)
			}()
		}
	}
	joined := &pb.WatchMembers{}
	for address, id := range next.members {
		if before.members[address] != id {
			joined.Addresses = append(joined.Addresses, address)
		}
	}
	b.placements.Range(func(_, value any) bool {
		p := value.(*placement)
		b.moveAway(p, next)
		if len(left.Members) > 0 {
			b.system.Root.Send(p.pid, left)
		}
		if len(joined.Addresses) > 0 && p.kind == SessionKind {
			// Active sessions must hear of their users' connections on the new members too.
			b.system.Root.Send(p.pid, joined)
		}
		if p.kind == ChannelKind && b.opts.ChannelReplicas > 0 {
			b.system.Root.Send(p.pid, membersChanged{})
		}
		return true
	})
}

// newActivation names one activation of a session grain, unique in the cluster.
func (b *Broker) newActivation() string {
	return b.system.Address() + "/" + strconv.FormatUint(b.activations.Add(1), 36)
}

// isMember reports whether the member incarnation id may still hold
// subscribers and connections: it is in the member list, or has not been
// seen to leave (a member that just joined may be ahead of this node's
// list).
func (b *Broker) isMember(id string) bool {
	return b.view.Load().hasMember(id) || !b.departed.has(id)
}

// askRelays sends msg to every member's relay at once and returns, by
// member address, the answers that arrive within timeout.
func (b *Broker) askRelays(ctx actor.Context, msg proto.Message, timeout time.Duration) map[string]any {
	return b.askRelaysAt(ctx, b.members(), msg, timeout)
}

func (b *Broker) members() []string {
	members := b.view.Load().members
	addresses := make([]string, 0, len(members))
	for address := range members {
		addresses = append(addresses, address)
	}
	return addresses
}

// askRelaysAt is askRelays for the members at addresses.
func (b *Broker) askRelaysAt(ctx actor.Context, addresses []string, msg proto.Message, timeout time.Duration) map[string]any {
	futures := map[string]*actor.Future{}
	for _, address := range addresses {
		futures[address] = ctx.RequestFuture(actor.NewPID(address, relayName), msg, timeout)
	}
	answers := make(map[string]any, len(futures))
	for address, f := range futures {
		res, err := f.Result()
		if err != nil {
			b.log.Warn("relay did not answer", "relay", address, "err", err)
			continue
		}
		answers[address] = res
	}
	return answers
}

func nowMillis() int64 { return time.Now().UnixMilli() }
