package cluster

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"
)

// ActivatorName is the actor on every member that activates the grains it
// is asked for (cluster.ActivationRequest) and answers with their PIDs.
// ("activator" is protoactor remote's, for remote spawning.)
const ActivatorName = "grain-activator"

// activatorTimeout bounds a lookup through identityLookup.Get.
const activatorTimeout = 5 * time.Second

// identityLookup places grains by Placement over the serving members of
// the latest MembersChanged. Unlike protoactor's disthash it never stops
// a grain because the topology changed: an activation learns from the
// broker's member list that it moved, hands its state over and stops
// itself, whereas disthash stops whatever its own hash, over draining
// members too, would place elsewhere.
type identityLookup struct {
	cluster      *cluster.Cluster
	activator    *actor.PID
	placement    atomic.Pointer[Placement]
	subscription *eventstream.Subscription
	shutdown     sync.Once
}

func (l *identityLookup) Setup(c *cluster.Cluster, _ []string, _ bool) {
	l.cluster = c
	l.placement.Store(NewPlacement(nil))
	l.subscription = c.ActorSystem.EventStream.Subscribe(func(evt any) {
		if changed, ok := evt.(*MembersChanged); ok {
			addresses := make([]string, 0, len(changed.Serving))
			for _, m := range changed.Serving {
				addresses = append(addresses, m.Address())
			}
			l.placement.Store(NewPlacement(addresses))
		}
	})
	var err error
	l.activator, err = c.ActorSystem.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &activator{cluster: c, grains: map[string]*actor.PID{}, identities: map[string]*cluster.ClusterIdentity{}}
	}), ActivatorName)
	if err != nil {
		panic(fmt.Errorf("spawn %s: %w", ActivatorName, err)) // Start returns it
	}
}

// Get asks the owner's activator for the grain, activating it there if
// need be; nil when no member serves or the owner does not answer.
func (l *identityLookup) Get(identity *cluster.ClusterIdentity) *actor.PID {
	owner := l.placement.Load().Owner(identity.Identity)
	if owner == "" {
		return nil
	}
	res, err := l.cluster.ActorSystem.Root.RequestFuture(actor.NewPID(owner, ActivatorName),
		&cluster.ActivationRequest{ClusterIdentity: identity}, activatorTimeout).Result()
	if activated, ok := res.(*cluster.ActivationResponse); err == nil && ok && !activated.Failed {
		return activated.Pid
	}
	return nil
}

// RemovePid: nothing caches PIDs on this lookup's behalf.
func (l *identityLookup) RemovePid(*cluster.ClusterIdentity, *actor.PID) {}

// Shutdown may be called more than once (protoactor does, leaving
// gracefully); the grains stop with the actor system.
func (l *identityLookup) Shutdown() {
	l.shutdown.Do(func() {
		l.cluster.ActorSystem.EventStream.Unsubscribe(l.subscription)
	})
}

// activator spawns grains as its children and remembers them until they
// stop, so a grain is activated once per member however often it is
// asked for.
type activator struct {
	cluster    *cluster.Cluster
	grains     map[string]*actor.PID // cluster identity key → activation
	identities map[string]*cluster.ClusterIdentity
}

func (a *activator) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *cluster.ActivationRequest:
		ctx.Respond(a.activate(ctx, msg.ClusterIdentity))
	case *actor.Terminated:
		key := msg.Who.Id
		if identity, ok := a.identities[key]; ok {
			delete(a.identities, key)
			delete(a.grains, identity.AsKey())
			if kind := a.cluster.GetClusterKind(identity.Kind); kind != nil {
				kind.Dec()
			}
		}
	}
}

func (a *activator) activate(ctx actor.Context, identity *cluster.ClusterIdentity) *cluster.ActivationResponse {
	if identity == nil {
		return &cluster.ActivationResponse{Failed: true}
	}
	if pid, ok := a.grains[identity.AsKey()]; ok {
		return &cluster.ActivationResponse{Pid: pid}
	}
	kind := a.cluster.GetClusterKind(identity.Kind)
	if kind == nil {
		return &cluster.ActivationResponse{Failed: true}
	}
	pid := ctx.SpawnPrefix(cluster.WithClusterIdentity(kind.Props, identity), identity.Identity)
	kind.Inc()
	a.grains[identity.AsKey()] = pid
	a.identities[pid.Id] = identity
	return &cluster.ActivationResponse{Pid: pid}
}
