// Package actors holds the broker's behaviour: one actor per client
// connection, a channel grain per channel (its subscribers and the order of
// its publications), a session grain per user (their live connections) and
// one relay per node that fans publications out to local sockets.
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
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
}

// Close codes the actors use; see docs/protocol.md.
const CloseTooManyConnections = 4029

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
	if _, err := b.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &replica{b: b} }), replicaName); err != nil {
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
	next := &view{term: term, self: b.system.Address(), members: make(map[string]string, len(serving)+len(draining)),
		owners: cluster.NewRendezvous()}
	next.owners.UpdateMembers(serving)
	for _, m := range serving {
		next.members[m.Address()] = m.Id
		next.serving = append(next.serving, m.Address())
	}
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
		if !next.owns(p.kind, p.identity) {
			p.moved.Store(true)
		}
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

// Open starts the actor of a new client connection.
func (b *Broker) Open(out *transport.Outbox) transport.Inbound {
	return b.open(&client{ID: out.ID, User: out.User, Outbox: out}, out.Info)
}

// open starts the actor of connection out, whose token says info.
func (b *Broker) open(out *client, info transport.TokenInfo) transport.Inbound {
	backlog := &commandBacklog{}
	props := actor.PropsFromProducer(func() actor.Actor { return newConnection(b, out, info, backlog) })
	pid, err := b.system.Root.SpawnNamed(props, "conn/"+out.ID)
	if err != nil {
		b.log.Error("spawn connection", "connection", out.ID, "err", err)
		out.Close(1011, "internal error")
		return closedInbound{}
	}
	return &connectionInbox{root: b.system.Root, pid: pid, backlog: backlog}
}

// request calls a grain and waits for its typed answer.
//
// A grain that is passivating, moving or on a dead node may drop a
// message (protoactor discards mail that reaches a stopping actor) or
// answer with a dead letter. Each attempt therefore has its own timeout,
// and the call is retried with backoff against a fresh lookup until the
// overall deadline; grains recognise retried requests by their sequence
// numbers, so nothing is done twice.
func request[T proto.Message](ctx context.Context, b *Broker, kind, identity string, msg proto.Message) (T, error) {
	var zero T
	deadline := time.Now().Add(b.opts.RequestTimeout)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return zero, fmt.Errorf("%s %s: %w: %v", kind, identity, transport.ErrUnavailable, lastErr)
		}
		pid, err := b.grainPID(kind, identity)
		if errors.Is(err, errTooManyLookups) {
			b.metrics.GrainLookups.WithLabelValues("refused").Inc()
			return zero, fmt.Errorf("%s %s: %w: %v", kind, identity, transport.ErrUnavailable, err)
		}
		if pid != nil {
			res, err := b.system.Root.RequestFuture(pid, msg, min(remaining, attemptTimeout)).Result()
			if err == nil {
				if _, moved := res.(*pb.Moved); moved {
					err = errMoved
				} else if answer, ok := res.(T); ok {
					return answer, nil
				} else {
					return zero, fmt.Errorf("%s %s: unexpected answer %T", kind, identity, res)
				}
			}
			lastErr = err
			b.forgetPID(kind, identity)
			if publish, ok := msg.(*pb.Publish); ok && errors.Is(err, actor.ErrTimeout) && publish.UnansweredBy == "" {
				// It may have been sequenced there: later attempts say so,
				// on a copy, as the first may still be read locally.
				publish = proto.Clone(publish).(*pb.Publish)
				publish.UnansweredBy = activationName(pid)
				msg = publish
			}
		} else {
			lastErr = fmt.Errorf("no activation found")
		}
		time.Sleep(min(time.Duration(1<<min(attempt, 8))*time.Millisecond, 200*time.Millisecond, time.Until(deadline)))
	}
}

// attemptTimeout bounds one try of a grain call; a live grain answers in
// microseconds, and an activation's recovery takes at most relayTimeout.
const (
	attemptTimeout = 500 * time.Millisecond
	relayTimeout   = time.Second
)

var errMoved = errors.New("the grain moved")

// queryHistory asks the channel's owner for its history without
// activating the channel where it can: a channel nobody uses has none,
// and a flood of made-up names must not activate a grain each.
func (b *Broker) queryHistory(ctx context.Context, channel string, q *pb.QueryHistory) (*pb.History, error) {
	if b.cachedPID(ChannelKind, channel) == nil {
		if owner := b.view.Load().owner(ChannelKind, channel); owner != "" {
			res, err := b.system.Root.RequestFuture(actor.NewPID(owner, relayName), q, attemptTimeout).Result()
			if history, ok := res.(*pb.History); err == nil && ok {
				return history, nil
			}
		}
	}
	return request[*pb.History](ctx, b, ChannelKind, channel, q)
}

// errTooManyLookups: this node is over its lookup budget (LookupRate).
var errTooManyLookups = errors.New("this node is looking up too many new channels at once; retry shortly")

// grainPID finds (activating if need be) the grain, through the cache.
func (b *Broker) grainPID(kind, identity string) (*actor.PID, error) {
	if pid := b.cachedPID(kind, identity); pid != nil {
		return pid, nil
	}
	return b.lookup(kind, identity, true)
}

// pendingLookup is one lookup in flight, shared by everyone who asks for
// the same grain meanwhile: at most one goroutine per grain waits on
// protoactor, however many callers give up on it.
type pendingLookup struct {
	done chan struct{}
	pid  *actor.PID
}

// lookup asks the member that owns the grain under the member list in
// force where it is, activating it if need be.
//
// A member that died but has not yet left the cluster does not answer;
// callers wait at most attemptTimeout and try again, so they find the new
// owner as soon as the dead member's lease expires. The lookup left
// behind ends on its own after lookupTimeout. A budgeted lookup is
// refused (errTooManyLookups) past the node's LookupRate.
func (b *Broker) lookup(kind, identity string, budgeted bool) (*actor.PID, error) {
	key := kind + "/" + identity
	cache := b.pids.Load()
	if cache.view == nil {
		return nil, nil
	}
	fresh := &pendingLookup{done: make(chan struct{})}
	existing, inFlight := cache.lookups.LoadOrStore(key, fresh)
	pending := existing.(*pendingLookup)
	if !inFlight {
		if budgeted && !b.lookups.Take() {
			cache.lookups.Delete(key)
			close(pending.done)
			return nil, errTooManyLookups
		}
		b.metrics.GrainLookups.WithLabelValues("started").Inc()
		go func() {
			pending.pid = b.activate(cache.view, kind, identity)
			if pending.pid != nil {
				b.cachePID(cache, kind, identity, pending.pid)
			}
			cache.lookups.Delete(key)
			close(pending.done)
		}()
	}
	timeout := time.NewTimer(attemptTimeout)
	defer timeout.Stop()
	select {
	case <-pending.done:
		return pending.pid, nil
	case <-timeout.C:
		return nil, nil
	}
}

// lookupTimeout bounds a lookup that callers have given up on.
const lookupTimeout = 5 * time.Second

// activate asks the owner's placement actor (protoactor's disthash, which
// activates whatever it is asked) for the grain. Owners are computed here,
// from serving members only, not by disthash over protoactor's topology,
// which also holds draining members: a member taken out of protoactor's
// topology is blocked for good by its peers.
func (b *Broker) activate(v *view, kind, identity string) *actor.PID {
	owner := v.owner(kind, identity)
	if owner == "" {
		return nil
	}
	request := &cluster.ActivationRequest{ClusterIdentity: cluster.NewClusterIdentity(identity, kind)}
	res, err := b.system.Root.RequestFuture(actor.NewPID(owner, disthash.PartitionActivatorActorName), request, lookupTimeout).Result()
	if err != nil {
		return nil
	}
	if activated, ok := res.(*cluster.ActivationResponse); ok {
		return activated.Pid
	}
	return nil
}

// tell sends to a grain without waiting; used where the sender must not block.
func (b *Broker) tell(ctx actor.SenderContext, kind, identity string, msg proto.Message) {
	// Not budgeted: what it sends (a closed connection's unsubscribes)
	// must arrive, or the channel keeps a ghost.
	if pid, _ := b.lookup(kind, identity, false); pid != nil {
		ctx.Send(pid, msg)
	}
}

func nowMillis() int64 { return time.Now().UnixMilli() }

// Publish publishes server-side data to a channel; from is empty.
func (b *Broker) Publish(ctx context.Context, channel string, data []byte, excludeUser string) (uint64, error) {
	if err := checkChannelAndData(channel, data); err != nil {
		return 0, err
	}
	res, err := request[*pb.Published](ctx, b, ChannelKind, channel, &pb.Publish{Channel: channel, Data: data, ExcludeUser: excludeUser,
		Publisher: "api-" + newEpoch() + newEpoch(), Sequence: 1})
	if err != nil {
		return 0, err
	}
	return res.Offset, nil
}

// SendToUser delivers data to every connection of user.
func (b *Broker) SendToUser(ctx context.Context, user string, data []byte) (int, error) {
	if !transport.ValidJSON(data) {
		return 0, fmt.Errorf("send to %s: data is not valid JSON", user)
	}
	res, err := request[*pb.SentToUser](ctx, b, SessionKind, user, &pb.SendToUser{Frame: transport.DirectFrame("", data, nowMillis()),
		Sender: "api-" + newEpoch() + newEpoch(), Sequence: 1})
	if err != nil {
		return 0, err
	}
	return int(res.Connections), nil
}

// Broadcast delivers data to every connection on every node.
func (b *Broker) Broadcast(ctx context.Context, data []byte) (int, error) {
	if !transport.ValidJSON(data) {
		return 0, fmt.Errorf("broadcast: data is not valid JSON")
	}
	msg := &pb.Broadcast{Frame: transport.DirectFrame("", data, nowMillis())}
	total := 0
	for _, member := range b.cluster.MemberList.Members().Members() {
		relay := actor.NewPID(member.Address(), relayName)
		res, err := b.system.Root.RequestFuture(relay, msg, time.Until(b.deadline(ctx))).Result()
		if err != nil {
			return total, fmt.Errorf("broadcast via %s: %w: %v", member.Address(), transport.ErrUnavailable, err)
		}
		if sent, ok := res.(*pb.SentToUser); ok {
			total += int(sent.Connections)
		}
	}
	return total, nil
}

// Subscribers lists the user ids subscribed to channel, one per user.
func (b *Broker) Subscribers(ctx context.Context, channel string) ([]string, error) {
	if !transport.ValidChannel(channel) {
		return nil, fmt.Errorf("invalid channel name %q", channel)
	}
	res, err := request[*pb.SubscriberList](ctx, b, ChannelKind, channel, &pb.ListSubscribers{})
	if err != nil {
		return nil, err
	}
	return res.Users, nil
}

// UserConnections counts user's open connections across the cluster.
func (b *Broker) UserConnections(ctx context.Context, user string) (int, error) {
	res, err := request[*pb.SessionInfo](ctx, b, SessionKind, user, &pb.QuerySession{})
	if err != nil {
		return 0, err
	}
	return len(res.Connections), nil
}

// DisconnectUser closes every connection of user with CloseKicked.
func (b *Broker) DisconnectUser(ctx context.Context, user string) (int, error) {
	res, err := request[*pb.DisconnectedUser](ctx, b, SessionKind, user,
		&pb.DisconnectUser{Code: transport.CloseKicked, Reason: "disconnected by server"})
	if err != nil {
		return 0, err
	}
	return int(res.Connections), nil
}

// Presence lists the users in channel with their connection counts.
func (b *Broker) Presence(ctx context.Context, channel string) ([]transport.PresenceMember, error) {
	if !transport.ValidChannel(channel) {
		return nil, fmt.Errorf("invalid channel name %q", channel)
	}
	res, err := request[*pb.Presence](ctx, b, ChannelKind, channel, &pb.QueryPresence{})
	if err != nil {
		return nil, err
	}
	return presenceMembers(res), nil
}

// SetChannelCapacity caps channel's distinct users (0: the namespace's
// default) for as long as the channel stays loaded.
func (b *Broker) SetChannelCapacity(ctx context.Context, channel string, capacity int) error {
	if !transport.ValidChannel(channel) {
		return fmt.Errorf("invalid channel name %q", channel)
	}
	_, err := request[*pb.ChannelConfigured](ctx, b, ChannelKind, channel, &pb.ConfigureChannel{Capacity: uint32(capacity)})
	return err
}

// CloseAll closes every connection on this node with code and waits,
// until ctx ends, for them to be gone. Each closes once its publications
// in flight are answered; those still waiting forceClosing before ctx ends
// are closed regardless.
// forceClosing is the time CloseAll keeps to close the connections still
// waiting for answers.
const forceClosing = 250 * time.Millisecond

func (b *Broker) CloseAll(ctx context.Context, code uint16, reason string) {
	gentle := &closeWhenAnswered{code: code, reason: reason}
	b.local.eachActor(func(pid *actor.PID) { b.system.Root.Send(pid, gentle) })
	answered, cancel := context.WithDeadline(ctx, b.deadline(ctx).Add(-forceClosing))
	defer cancel()
	for b.local.count() > 0 && answered.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	b.local.each(func(out *client) { out.Close(code, reason) })
	for b.local.count() > 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// HandOverChannels wakes each channel active on this node at its new
// owner, which takes the channel's state (epoch, offset, history) over
// from the activation here. Call it once this node drains (owns nothing
// any more, its relay still answering); it returns when every channel
// has been taken over or ctx ends.
func (b *Broker) HandOverChannels(ctx context.Context) {
	var channels []string
	b.placements.Range(func(_, value any) bool {
		if p := value.(*placement); p.kind == ChannelKind {
			channels = append(channels, p.identity)
		}
		return true
	})
	start := time.Now()
	b.wakeAll(ctx, channels)
	b.log.Info("channels handed over", "channels", len(channels), "took", time.Since(start).Round(time.Millisecond), "cut_short", ctx.Err() != nil)
}

// wakeAll activates channels at their owners, a few at a time.
func (b *Broker) wakeAll(ctx context.Context, channels []string) {
	const inParallel = 32
	slots := make(chan struct{}, inParallel)
	var wg sync.WaitGroup
	for _, name := range channels {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			b.wake(ctx, name)
		}()
	}
	wg.Wait()
}

// wake activates a channel at its owner, which takes its state over; it
// keeps trying until ctx ends (the owner may not know yet that it owns it).
func (b *Broker) wake(ctx context.Context, channel string) {
	if _, err := request[*pb.Activated](ctx, b, ChannelKind, channel, &pb.Activate{}); err != nil {
		b.log.Warn("moved channel not woken at its new owner", "channel", channel, "err", err)
	}
}

// CloseClientsWhileUncertain closes this node's clients with code
// whenever it has been unsure of its own membership for longer than
// grace (cut off from etcd): it sequences nothing meanwhile, and members
// in good standing can serve them. It returns when ctx ends.
func (b *Broker) CloseClientsWhileUncertain(ctx context.Context, grace time.Duration, code uint16, reason string) {
	tick := time.NewTicker(max(grace/8, 50*time.Millisecond))
	defer tick.Stop()
	var uncertainSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		switch {
		case b.membership.Certain():
			uncertainSince = time.Time{}
		case uncertainSince.IsZero():
			uncertainSince = time.Now()
		case time.Since(uncertainSince) > grace:
			b.local.each(func(out *client) { out.Close(code, reason) })
		}
	}
}

func (b *Broker) deadline(ctx context.Context) time.Time {
	if deadline, ok := ctx.Deadline(); ok {
		return deadline
	}
	return time.Now().Add(b.opts.RequestTimeout)
}

func checkChannelAndData(channel string, data []byte) error {
	if !transport.ValidChannel(channel) {
		return fmt.Errorf("invalid channel name %q", channel)
	}
	if !transport.ValidJSON(data) {
		return fmt.Errorf("publish to %s: data is not valid JSON", channel)
	}
	return nil
}

// connectionInbox forwards socket events to the connection actor.
type connectionInbox struct {
	root    *actor.RootContext
	pid     *actor.PID
	backlog *commandBacklog
}

// Command waits while the connection's backlog is full, so its socket is
// not read meanwhile.
func (c *connectionInbox) Command(cmd *pb.ClientCommand) {
	c.backlog.enter()
	c.root.Send(c.pid, cmd)
}

// Refreshed goes through the mailbox, behind the commands read before it.
func (c *connectionInbox) Refreshed(r transport.Refresh) { c.root.Send(c.pid, r) }
func (c *connectionInbox) Closed()                       { c.root.Send(c.pid, &pb.SocketClosed{}) }

type closedInbound struct{}

func (closedInbound) Command(*pb.ClientCommand)   {}
func (closedInbound) Refreshed(transport.Refresh) {}
func (closedInbound) Closed()                     {}
