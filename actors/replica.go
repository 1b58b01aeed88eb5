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
	term uint64 // of the activation it is kept for
	// the term of the newest activation that took the copy over: older
	// ones, the one it was kept for included, are refused from then on
	takenBy uint64
	owner   string // that activation's address
	opts    ChannelOptions
	epoch   string
	offset  uint64
	history []stored
	recent  recentPublications // without history
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

// handOver is the copy of channel as the activation of term takes it
// over. From then on the copy refuses updates of older terms, those still
// on their way from the activation it was kept for included: a
// publication the successor never saw is never confirmed, nor answered,
// here. It keeps its own term, so a copy the successor replicates itself
// wins over it when that one in turn dies, whether or not this hand-over
// reached it. An activation older than one that took it gets nothing.
func (r *replicas) handOver(channel string, term uint64) *pb.ChannelState {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.copies[channel]
	if c == nil || max(c.term, c.takenBy) > term {
		return &pb.ChannelState{}
	}
	c.takenBy = term
	c.trim()
	state := &pb.ChannelState{Found: true, Epoch: c.epoch, Offset: c.offset, Lineage: c.lineage, ConfiguredCapacity: c.capacity}
	state.History = storedState(c.history)
	state.Recent = storedState(c.recent.trim())
	state.Answered = answeredState(&c.answers)
	for u := range c.users {
		state.Users = append(state.Users, u)
	}
	slices.Sort(state.Users)
	return state
}

// update applies what an activation sent, in order: its whole state,
// unless a newer activation's copy is kept already; publications, to a
// copy that stands right before the first of them (otherwise the
// activation must send its whole state); answers; and who arrived or
// left.
func (r *replicas) update(b *Broker, owner string, u *pb.ReplicaUpdate) *pb.ReplicaAck {
	r.mu.Lock()
	defer r.mu.Unlock()
	ack := &pb.ReplicaAck{Channel: u.Channel, Term: u.Term, OwnerActor: u.OwnerActor}
	c := r.copies[u.Channel]
	if c != nil && max(c.term, c.takenBy) > u.Term {
		ack.Stale = true
		return ack
	}
	if s := u.Whole; s != nil {
		c = &replicaCopy{term: u.Term, owner: owner, opts: b.opts.Namespaces.For(u.Channel), epoch: s.Epoch, offset: s.Offset,
			capacity: s.ConfiguredCapacity, lineage: s.Lineage, history: storedFrom(s.History), recent: recentFrom(storedFrom(s.Recent)),
			users: make(map[string]bool, len(s.Users))}
		for _, a := range s.Answered {
			c.answers.remember(a.Publisher, a.Sequence, answerFrom(a))
		}
		for _, user := range s.Users {
			c.users[user] = true
		}
		if r.copies == nil {
			r.copies = map[string]*replicaCopy{}
		}
		r.copies[u.Channel] = c
	}
	if c == nil || c.term != u.Term || c.epoch != u.Epoch {
		ack.Resync = true
		if len(u.Publications) > 0 {
			ack.Offset = u.Publications[0].Offset
		}
		return ack
	}
	for _, p := range u.Publications {
		if p.Offset > c.offset+1 {
			ack.Resync, ack.Offset = true, p.Offset
			return ack
		}
		if p.Offset <= c.offset {
			continue // sent again after the whole state overtook it
		}
		c.offset = p.Offset
		kept := stored{offset: p.Offset, at: time.Unix(0, p.AtUnixNano), frame: p.Frame, excluded: p.ExcludedUser}
		if c.opts.HistorySize > 0 {
			c.history = append(c.history, kept)
		} else {
			c.recent.add(kept)
		}
	}
	if len(u.Publications) > 0 {
		c.trim()
	}
	for _, a := range u.Answered {
		c.answers.remember(a.Publisher, a.Sequence, answerFrom(a))
	}
	for _, user := range u.Arrived {
		c.users[user] = true
	}
	for _, user := range u.Left {
		delete(c.users, user)
	}
	ack.Offset = c.offset
	return ack
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

func (c *replicaCopy) trim() {
	c.history = trimStored(c.history, c.opts)
	c.recent.trim()
}

// replica is the actor on every node that keeps its copies, and the
// router of its activations' replication: updates for each member and
// confirmations for each node wait here for the messages already in the
// mailbox, then go out together, one message per member.
type replica struct {
	broker   *Broker
	outbound map[string]*pb.ReplicaUpdates // replica address → updates for it
	acks     map[string]*pb.ReplicaAcks    // owner address → confirmations for it
	flushing bool                          // a flushReplication is queued
}

// replicate asks this node's replica actor to send update to the member at to.
type replicate struct {
	to     string
	update *pb.ReplicaUpdate
}

// flushReplication reminds the replica actor to send what waits.
type flushReplication struct{}

func newReplica(b *Broker) *replica {
	return &replica{broker: b, outbound: map[string]*pb.ReplicaUpdates{}, acks: map[string]*pb.ReplicaAcks{}}
}

func (r *replica) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case replicate:
		batch := r.outbound[msg.to]
		if batch == nil {
			batch = &pb.ReplicaUpdates{From: ctx.Self().Address, FromMember: r.broker.system.ID}
			r.outbound[msg.to] = batch
		}
		batch.Updates = append(batch.Updates, msg.update)
		r.flushSoon(ctx)
	case *pb.ReplicaUpdates:
		departed := msg.FromMember != "" && !r.broker.isMember(msg.FromMember)
		for _, u := range msg.Updates {
			var ack *pb.ReplicaAck
			if departed {
				// Late mail from a member that left (a pause, a partition):
				// its channels' successors may have taken, even dropped,
				// the copies it would recreate here.
				ack = &pb.ReplicaAck{Channel: u.Channel, Term: u.Term, OwnerActor: u.OwnerActor, Stale: true}
			} else {
				ack = r.broker.replicas.update(r.broker, msg.From, u)
			}
			ack.Replica = ctx.Self().Address
			if !ack.Resync && !ack.Stale {
				answerWaiting(ctx, u, ack)
			}
			confirmations := r.acks[msg.From]
			if confirmations == nil {
				confirmations = &pb.ReplicaAcks{}
				r.acks[msg.From] = confirmations
			}
			confirmations.Acks = append(confirmations.Acks, ack)
		}
		r.flushSoon(ctx)
	case *pb.ReplicaAcks:
		for _, ack := range msg.Acks {
			ctx.Send(actor.NewPID(ctx.Self().Address, ack.OwnerActor), ack)
		}
	case flushReplication:
		r.flushing = false
		for address, batch := range r.outbound {
			ctx.Send(actor.NewPID(address, replicaName), batch)
		}
		for address, confirmations := range r.acks {
			ctx.Send(actor.NewPID(address, replicaName), confirmations)
		}
		clear(r.outbound)
		clear(r.acks)
	case *pb.ReplicaDrop:
		r.broker.replicas.drop(msg.Channel, msg.Term)
	}
}

// answerWaiting answers the publishers waiting for the publications of an
// update this copy now holds, and tells the activation whom it answered.
func answerWaiting(ctx actor.Context, u *pb.ReplicaUpdate, ack *pb.ReplicaAck) {
	for _, reply := range u.Replies {
		if int(reply.Answered) >= len(u.Answered) {
			continue
		}
		answered := u.Answered[reply.Answered]
		if answered.Offset == 0 || answered.Offset > ack.Offset {
			continue
		}
		ctx.Send(&actor.PID{Address: reply.Address, Id: reply.Actor, RequestId: reply.RequestId}, answerFrom(answered))
		if ack.RepliedFrom == 0 {
			ack.RepliedFrom = answered.Offset
		}
		ack.RepliedFrom = min(ack.RepliedFrom, answered.Offset)
		ack.RepliedThrough = max(ack.RepliedThrough, answered.Offset)
	}
}

func (r *replica) flushSoon(ctx actor.Context) {
	if !r.flushing {
		r.flushing = true
		ctx.Send(ctx.Self(), flushReplication{})
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

// A channel without history keeps its publications of the last
// recentWindow, at most recentBytes of them: what a relay may not have
// received when the channel's node died, for the successor to send it.
const (
	recentWindow = 3 * time.Second
	recentBytes  = maxHistoryPageBytes
)

// recentPublications are a channel's latest publications, oldest first.
type recentPublications struct {
	list  []stored
	bytes int // of their frames
}

func recentFrom(list []stored) recentPublications {
	r := recentPublications{list: list}
	for _, s := range list {
		r.bytes += len(s.frame)
	}
	r.trim()
	return r
}

// add keeps a publication just sequenced (or copied): its own time is now
// enough for trimming, so adding reads no clock.
func (r *recentPublications) add(s stored) {
	r.list = append(r.list, s)
	r.bytes += len(s.frame)
	r.trimAsOf(s.at)
}

// trim drops publications older than recentWindow or beyond recentBytes.
func (r *recentPublications) trim() []stored { return r.trimAsOf(time.Now()) }

// trimAsOf is trim at the time now. The slice only advances: append moves
// the rest to a new array when it fills, so each publication is copied a
// bounded number of times.
func (r *recentPublications) trimAsOf(now time.Time) []stored {
	cutoff := now.Add(-recentWindow)
	drop := 0
	for drop < len(r.list) && (r.bytes > recentBytes || r.list[drop].at.Before(cutoff)) {
		r.bytes -= len(r.list[drop].frame)
		r.list[drop] = stored{}
		drop++
	}
	r.list = r.list[drop:]
	return r.list
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
