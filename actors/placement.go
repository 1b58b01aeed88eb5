package actors

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	sbcluster "github.com/switchboard/switchboard/cluster"
	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// Membership is this node's standing in the cluster, as grains need it.
type Membership interface {
	// Certain reports whether this node is surely still a member, so no
	// other node can have taken over the grains it owns.
	Certain() bool
	// Term is the etcd revision of the member list in force; it grows with
	// every change.
	Term() uint64
}

// view is the member list in force on this node: who owns which grain
// (rendezvous hashing over the serving members' addresses) and which
// member incarnation listens at each address, draining members included.
type view struct {
	term    uint64
	self    string            // this node's address
	members map[string]string // address → member id, serving and draining
	serving []string          // addresses of the members that own grains
	owners  *sbcluster.Placement
}

// membersChanged tells a channel activation that a new member list is in
// force: the members that keep its replicas may have changed.
type membersChanged struct{}

// movedAway tells an activation that its grain belongs to another member
// under the new member list. Like any message to a moved activation, it
// makes the activation answer Moved for movedLinger and then stop; a
// channel that holds subscribers or history then wakes at its new owner,
// which takes its state over now rather than at the channel's next use.
type movedAway struct{}

// owner is the address of the member that owns a grain; empty when no
// member serves.
func (v *view) owner(kind, identity string) string {
	return v.owners.Owner(identity)
}

func (v *view) owns(kind, identity string) bool { return v.owner(kind, identity) == v.self }

func (v *view) hasMember(id string) bool {
	for _, m := range v.members {
		if m == id {
			return true
		}
	}
	return false
}

// placement is one activation of a grain on this node: the term of the
// member list it was placed under, and whether it has since moved (its
// identity belongs to another member under a newer list, or a newer
// activation has announced itself). A moved activation sequences nothing
// more: it answers Moved, and callers look the grain up again.
type placement struct {
	kind, identity string
	term           uint64
	pid            *actor.PID
	moved          atomic.Bool
	served         atomic.Bool // took over and sequenced as the channel's activation; one moved at birth never did
	// Placed where the member list in force says it does not belong (a
	// lookup made under a newer or older list than this node's).
	bornMoved bool
}

// place registers a new activation under the member list in force.
func (b *Broker) place(kind, identity string, pid *actor.PID) *placement {
	v := b.view.Load()
	p := &placement{kind: kind, identity: identity, term: v.term, pid: pid}
	if !v.owns(kind, identity) {
		p.moved.Store(true)
		p.bornMoved = true
	}
	b.placements.Store(kind+"/"+identity, p)
	// A list swapped in meanwhile may have gone over the placements
	// before this one was stored.
	if now := b.view.Load(); now != v {
		b.moveAway(p, now)
	}
	return p
}

// moveAway marks an activation moved if the member list v places its
// grain elsewhere, and tells it so (movedAway), unless this node itself
// is draining or leaving: then its shutdown hands each grain over, and
// only then stops it.
func (b *Broker) moveAway(p *placement, v *view) {
	if v.owns(p.kind, p.identity) || p.moved.Swap(true) {
		return
	}
	if slices.Contains(v.serving, v.self) {
		b.system.Root.Send(p.pid, movedAway{})
	}
}

// unplace forgets a stopped activation (a newer one stays).
func (b *Broker) unplace(p *placement) {
	b.placements.CompareAndDelete(p.kind+"/"+p.identity, p)
}

// standDown answers a request an activation may not serve: it moved, or
// its node is unsure of its membership. The caller looks the grain up
// again; a moved activation stops soon after.
func standDown(ctx actor.Context, p *placement, idle *passivation) {
	if ctx.Sender() != nil {
		moved := &pb.Moved{}
		if publish, ok := ctx.Message().(*pb.Publish); ok {
			moved.Sequence = publish.Sequence
		}
		ctx.Respond(moved)
	}
	if p.bornMoved {
		// It never served: stop at once, so that once this node's list
		// catches up, the next lookup here activates the grain afresh
		// rather than finding this one.
		idle.stopSoon(ctx, 0)
	} else if p.moved.Load() {
		idle.stopSoon(ctx, movedLinger)
	}
}

// movedLinger is how long a moved activation keeps answering Moved before
// it stops: callers whose member list still points here get a quick
// answer rather than waiting out a request sent to a stopped actor.
const movedLinger = time.Second

// activeHere returns this node's activation of a grain, if any.
func (b *Broker) activeHere(kind, identity string) *placement {
	if p, ok := b.placements.Load(kind + "/" + identity); ok {
		return p.(*placement)
	}
	return nil
}

// serving reports whether an activation may sequence now.
func (b *Broker) serving(p *placement) bool {
	return !p.moved.Load() && b.membership.Certain()
}

// fenceBy records that an activation of the grain was placed under term
// elsewhere: a local one placed under an older term has moved. It reports
// whether the local activation is newer (the caller is the stale one), or
// older and serving until now, with its term (the caller may take its
// state over).
func (b *Broker) fenceBy(kind, identity string, term uint64) (newer, older bool, olderTerm uint64) {
	p := b.activeHere(kind, identity)
	if p == nil {
		return false, false, 0
	}
	if p.term < term {
		wasServing := p.served.Load()
		p.moved.Store(true)
		return false, wasServing, p.term
	}
	return p.term > term, false, 0
}

// pidCache holds where grains were found under one member list; a new
// list starts a new cache, so no identity whose owner changed is ever
// served from it. It holds at most maxCachedPIDs grains. Lookups in
// flight belong to the list too: one stuck on a member that has since
// left must not hold up lookups under the new list.
type pidCache struct {
	view               *view
	channels, sessions sync.Map // identity → *actor.PID
	size               atomic.Int64
	lookups            sync.Map // kind/identity → *pendingLookup
}

const maxCachedPIDs = 100_000

func (c *pidCache) of(kind string) *sync.Map {
	if kind == SessionKind {
		return &c.sessions
	}
	return &c.channels
}

func (b *Broker) cachedPID(kind, identity string) *actor.PID {
	if pid, ok := b.pids.Load().of(kind).Load(identity); ok {
		return pid.(*actor.PID)
	}
	return nil
}

// cachePID records where a lookup made under cache's member list found
// the grain; a cache replaced meanwhile keeps it to itself.
func (b *Broker) cachePID(c *pidCache, kind, identity string, pid *actor.PID) {
	if _, loaded := c.of(kind).Swap(identity, pid); !loaded && c.size.Add(1) > maxCachedPIDs {
		b.pids.CompareAndSwap(c, &pidCache{})
	}
}

// forgetPID drops a cached grain that did not answer or has moved.
func (b *Broker) forgetPID(kind, identity string) {
	b.pids.Load().of(kind).Delete(identity)
}

// departedMembers remembers the member incarnations seen to leave, so a
// late message from one (a subscribe sent just before its node died) does
// not bring back a ghost. It keeps the latest maxDeparted.
type departedMembers struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	order []string
}

const maxDeparted = 1024

func (d *departedMembers) add(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = map[string]struct{}{}
	}
	if _, known := d.ids[id]; known {
		return
	}
	d.ids[id] = struct{}{}
	d.order = append(d.order, id)
	if len(d.order) > maxDeparted {
		delete(d.ids, d.order[0])
		d.order = d.order[1:]
	}
}

func (d *departedMembers) has(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.ids[id]
	return ok
}

// activationName names one activation of a grain across the cluster.
// (PID.String is protobuf's text form, which is not stable.)
func activationName(pid *actor.PID) string { return pid.Address + "/" + pid.Id }
