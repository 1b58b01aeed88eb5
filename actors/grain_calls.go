package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	sbcluster "github.com/switchboard/switchboard/cluster"
	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// request calls a grain and waits for its typed answer.
//
// A grain that is passivating, moving or on a dead node may drop a
// message (protoactor discards mail that reaches a stopping actor) or
// answer with a dead letter. Each attempt therefore has its own timeout,
// and the call is retried with backoff against a fresh lookup until the
// overall deadline; grains recognise retried requests by their sequence
// numbers, so nothing is done twice. A publication that an attempt may
// have sequenced (it timed out, or the activation moved after sequencing
// it) waits a failover longer for its answer, and is of unknown outcome,
// not unavailable, if none comes.
func request[T proto.Message](ctx context.Context, b *Broker, kind, identity string, msg proto.Message) (T, error) {
	var zero T
	deadline, ownDeadline := ctx.Deadline()
	if !ownDeadline {
		deadline = time.Now().Add(b.opts.RequestTimeout)
		if maybeSequenced(msg) {
			deadline = deadline.Add(b.opts.MemberLossDetection)
		}
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return zero, fmt.Errorf("%s %s: %w: %v", kind, identity, unanswered(msg), lastErr)
		}
		pid, err := b.grainPID(kind, identity)
		if errors.Is(err, errTooManyLookups) {
			b.metrics.GrainLookups.WithLabelValues("refused").Inc()
			if !maybeSequenced(msg) {
				return zero, fmt.Errorf("%s %s: %w: %v", kind, identity, transport.ErrUnavailable, err)
			}
			// Its answer may be waiting at the successor: keep asking
			// until the deadline rather than give up on a busy moment.
			lastErr = err
		} else if pid != nil {
			res, err := b.system.Root.RequestFuture(pid, msg, min(remaining, attemptTimeout)).Result()
			sequenced := false
			if err == nil {
				if moved, ok := res.(*pb.Moved); ok {
					err, sequenced = errMoved, moved.Sequenced
				} else if answer, ok := res.(T); ok {
					return answer, nil
				} else {
					return zero, fmt.Errorf("%s %s: unexpected answer %T", kind, identity, res)
				}
			}
			lastErr = err
			b.forgetPID(kind, identity)
			if publish, ok := msg.(*pb.Publish); ok && (sequenced || errors.Is(err, actor.ErrTimeout)) && publish.UnansweredBy == "" {
				// It may have been sequenced there: later attempts say so,
				// on a copy, as the first may still be read locally; and
				// they wait out a failover for the answer.
				publish = proto.Clone(publish).(*pb.Publish)
				publish.UnansweredBy = activationName(pid)
				msg = publish
				if !ownDeadline {
					deadline = deadline.Add(b.opts.MemberLossDetection)
				}
			}
		} else {
			lastErr = fmt.Errorf("no activation found")
		}
		time.Sleep(min(time.Duration(1<<min(attempt, 8))*time.Millisecond, 200*time.Millisecond, time.Until(deadline)))
	}
}

// maybeSequenced reports whether msg is a publication an earlier attempt
// may have sequenced without its answer reaching the caller.
func maybeSequenced(msg proto.Message) bool {
	publish, ok := msg.(*pb.Publish)
	return ok && publish.UnansweredBy != ""
}

// unanswered is the error for a request that got no answer in time: a
// publication that may have been sequenced, and may yet be delivered, is
// of unknown outcome ("try again" could publish it twice); anything else
// is unavailable.
func unanswered(msg proto.Message) error {
	if maybeSequenced(msg) {
		return transport.ErrOutcomeUnknown
	}
	return transport.ErrUnavailable
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

// activate asks the owner's activator (which activates whatever it is
// asked) for the grain. Owners are computed here, from serving members
// only, not over protoactor's topology, which also holds draining
// members: a member taken out of protoactor's topology is blocked for
// good by its peers.
func (b *Broker) activate(v *view, kind, identity string) *actor.PID {
	owner := v.owner(kind, identity)
	if owner == "" {
		return nil
	}
	request := &cluster.ActivationRequest{ClusterIdentity: cluster.NewClusterIdentity(identity, kind)}
	res, err := b.system.Root.RequestFuture(actor.NewPID(owner, sbcluster.ActivatorName), request, lookupTimeout).Result()
	if activated, ok := res.(*cluster.ActivationResponse); err == nil && ok && !activated.Failed {
		return activated.Pid
	}
	return nil
}

// tell sends msg to a grain without waiting for an answer. Finding the
// grain does wait: a lookup at its owner (activating it if need be, and
// not through the cache) for at most attemptTimeout; a grain not found by
// then is not told.
func (b *Broker) tell(ctx actor.SenderContext, kind, identity string, msg proto.Message) {
	// Not budgeted: what it sends (a closed connection's unsubscribes)
	// must arrive, or the channel keeps a ghost.
	if pid, _ := b.lookup(kind, identity, false); pid != nil {
		ctx.Send(pid, msg)
	}
}

func (b *Broker) deadline(ctx context.Context) time.Time {
	if deadline, ok := ctx.Deadline(); ok {
		return deadline
	}
	return time.Now().Add(b.opts.RequestTimeout)
}
