package actors

import (
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// replicaName is the actor on every node that keeps copies of channel
// state for activations on other members.
const replicaName = "replica"

// replicas are the copies of channel state this node keeps: for each
// channel, the state of the activation that replicates to this node, up
// to the last publication it sent. When that activation's node dies, the
// channel's next owner (the member rendezvous hashing ranks next, which is
// where the copy was kept) takes the copy through this node's relay and
// the channel goes on in the same epoch.
type replicas struct {
	mu     sync.Mutex
	copies map[string]*replicaCopy // channel → the copy kept here
}

type replicaCopy struct {
	term    uint64 // of the activation it is kept for
	owner   string // that activation's address
	opts    ChannelOptions
	epoch   string
	offset  uint64
	history []stored
	// capacity set through the HTTP API; 0: the namespace's
	capacity uint32
	lineage  []string
	answers  retries
	users    map[string]bool // present in the channel
}

// standing reports the term and offset of the copy of channel kept here.
func (r *replicas) standing(channel string) (term, offset uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.copies[channel]
	if c == nil {
		return 0, 0, false
	}
	return c.term, c.offset, true
}

// state is the copy of channel as a successor takes it over.
func (r *replicas) state(channel string) *pb.ChannelState {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.copies[channel]
	if c == nil {
		return &pb.ChannelState{}
	}
	c.trim()
	state := &pb.ChannelState{Found: true, Epoch: c.epoch, Offset: c.offset, Lineage: c.lineage, ConfiguredCapacity: c.capacity}
	state.History = storedState(c.history)
	state.Answered = answeredState(&c.answers)
	for u := range c.users {
		state.Users = append(state.Users, u)
	}
	slices.Sort(state.Users)
	return state
}

// apply keeps the state an activation sent whole, unless a newer
// activation's copy is kept already.
func (r *replicas) apply(b *Broker, owner string, sync *pb.ReplicaSync) *pb.ReplicaAck {
	r.mu.Lock()
	defer r.mu.Unlock()
	ack := &pb.ReplicaAck{Channel: sync.Channel, Term: sync.Term}
	if old := r.copies[sync.Channel]; old != nil && old.term > sync.Term {
		ack.Stale = true
		return ack
	}
	s := sync.State
	c := &replicaCopy{term: sync.Term, owner: owner, opts: b.opts.Namespaces.For(sync.Channel), epoch: s.Epoch, offset: s.Offset,
		capacity: s.ConfiguredCapacity, lineage: s.Lineage, history: storedFrom(s.History)}
	for _, a := range s.Answered {
		c.answers.remember(a.Publisher, a.Sequence, answerFrom(a))
	}
	c.users = make(map[string]bool, len(s.Users))
	for _, u := range s.Users {
		c.users[u] = true
	}
	if r.copies == nil {
		r.copies = map[string]*replicaCopy{}
	}
	r.copies[sync.Channel] = c
	ack.Offset = c.offset
	return ack
}

// append adds publications, in order, to a copy that stands right before
// the first of them; otherwise the activation must send its state whole.
func (r *replicas) append(a *pb.ReplicaAppend) *pb.ReplicaAck {
	r.mu.Lock()
	defer r.mu.Unlock()
	ack := &pb.ReplicaAck{Channel: a.Channel, Term: a.Term}
	c := r.copies[a.Channel]
	if c != nil && c.term > a.Term {
		ack.Stale = true
		return ack
	}
	for _, p := range a.Publications {
		switch {
		case p == nil:
			ack.Resync = true
			return ack
		case c == nil || c.term != a.Term || c.epoch != a.Epoch || p.Offset > c.offset+1:
			ack.Resync, ack.Offset = true, p.Offset
			return ack
		case p.Offset <= c.offset:
			continue // sent again after a resync overtook it
		}
		c.offset = p.Offset
		if c.opts.HistorySize > 0 {
			c.history = append(c.history, stored{offset: p.Offset, at: time.Unix(0, p.AtUnixNano), frame: p.Frame, excluded: p.ExcludedUser})
		}
	}
	if c == nil {
		ack.Resync = true
		return ack
	}
	c.trim()
	for _, answered := range a.Answered {
		c.answers.remember(answered.Publisher, answered.Sequence, answerFrom(answered))
	}
	ack.Offset = c.offset
	return ack
}

// presence follows the users present in the copy kept for the
// activation that sent it.
func (r *replicas) presence(p *pb.ReplicaPresence) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.copies[p.Channel]
	if c == nil || c.term != p.Term {
		return // a whole state follows, which says who is present
	}
	for _, u := range p.Arrived {
		c.users[u] = true
	}
	for _, u := range p.Left {
		delete(c.users, u)
	}
}

// orphans are the channels whose copies here were kept for activations
// on the members at gone addresses.
func (r *replicas) orphans(gone map[string]struct{}) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var channels []string
	for name, c := range r.copies {
		if _, left := gone[c.owner]; left {
			channels = append(channels, name)
		}
	}
	return channels
}

// drop forgets the copy kept for the activation of term or an older one.
func (r *replicas) drop(channel string, term uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.copies[channel]; c != nil && c.term <= term {
		delete(r.copies, channel)
	}
}

func (c *replicaCopy) trim() { c.history = trimStored(c.history, c.opts) }

// replica is the actor that keeps this node's copies; it answers each
// copy's activation with how far the copy goes.
type replica struct{ b *Broker }

func (r *replica) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *pb.ReplicaAppend:
		r.answer(ctx, r.b.replicas.append(msg))
	case *pb.ReplicaSync:
		owner := ""
		if ctx.Sender() != nil {
			owner = ctx.Sender().Address
		}
		r.answer(ctx, r.b.replicas.apply(r.b, owner, msg))
	case *pb.ReplicaPresence:
		r.b.replicas.presence(msg)
	case *pb.ReplicaDrop:
		r.b.replicas.drop(msg.Channel, msg.Term)
	}
}

func (r *replica) answer(ctx actor.Context, ack *pb.ReplicaAck) {
	if ctx.Sender() != nil {
		ack.Replica = ctx.Self().Address
		ctx.Respond(ack)
	}
}

func storedState(history []stored) []*pb.ChannelState_Stored {
	out := make([]*pb.ChannelState_Stored, 0, len(history))
	for _, s := range history {
		out = append(out, &pb.ChannelState_Stored{Offset: s.offset, AtUnixNano: s.at.UnixNano(), Frame: s.frame, ExcludedUser: s.excluded})
	}
	return out
}

func storedFrom(history []*pb.ChannelState_Stored) []stored {
	out := make([]stored, 0, len(history))
	for _, s := range history {
		out = append(out, stored{offset: s.Offset, at: time.Unix(0, s.AtUnixNano), frame: s.Frame, excluded: s.ExcludedUser})
	}
	return out
}

func answeredState(r *retries) []*pb.ChannelState_Answered {
	var out []*pb.ChannelState_Answered
	r.each(func(publisher string, answer any) {
		if p, ok := answer.(*pb.Published); ok {
			out = append(out, answeredOf(publisher, p))
		}
	})
	return out
}

func answeredOf(publisher string, p *pb.Published) *pb.ChannelState_Answered {
	return &pb.ChannelState_Answered{Publisher: publisher, Sequence: p.Sequence, Offset: p.Offset, Mismatch: p.Mismatch, OutcomeUnknown: p.OutcomeUnknown}
}

func answerFrom(a *pb.ChannelState_Answered) *pb.Published {
	return &pb.Published{Offset: a.Offset, Mismatch: a.Mismatch, OutcomeUnknown: a.OutcomeUnknown, Sequence: a.Sequence}
}

// trimStored drops publications beyond the size or older than the TTL.
func trimStored(history []stored, opts ChannelOptions) []stored {
	if over := len(history) - opts.HistorySize; over > 0 {
		history = append(history[:0], history[over:]...)
	}
	cutoff := time.Now().Add(-opts.HistoryTTL)
	drop := 0
	for drop < len(history) && history[drop].at.Before(cutoff) {
		drop++
	}
	if drop > 0 {
		history = append(history[:0], history[drop:]...)
	}
	return history
}
