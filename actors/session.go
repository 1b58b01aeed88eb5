package actors

import (
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// session is the grain for one user: where each of the user's connections
// lives, wherever in the cluster, so one message reaches all their tabs
// and devices.
//
// It is activated only when needed (a send to the user, a question about
// them, or a connection limit to check), not for every connection: on
// activation it learns the user's connections from every node's relay and
// watches them there for the ones that open and close later.
type session struct {
	broker      *Broker
	user        string
	activation  string
	placement   *placement
	connections map[string]userConnection // connection id → where it lives
	// Connections the relays reported before their Attach arrived: under a
	// per-user limit they count only once this activation accepts them.
	unadmitted map[string]struct{}
	idle       passivation
	retries    retries
}

// userConnection is one connection of the user: its actor, and the
// member incarnation of its node.
type userConnection struct {
	pid    *actor.PID
	member string
}

func newSession(b *Broker) *session {
	return &session{broker: b, connections: make(map[string]userConnection), unadmitted: make(map[string]struct{}),
		idle: passivation{idle: b.opts.GrainIdleTimeout}}
}

func (s *session) Receive(ctx actor.Context) {
	if _, reminder := ctx.Message().(*pb.IdleCheck); !reminder {
		s.idle.touch()
	}
	switch msg := ctx.Message().(type) {
	case *cluster.ClusterInit:
		s.user = msg.Identity.Identity
		s.activation = s.broker.newActivation()
		s.placement = s.broker.place(SessionKind, s.user, ctx.Self())
		s.broker.metrics.Actors.WithLabelValues(SessionKind).Inc()
		if !s.placement.moved.Load() {
			s.watch(ctx, s.broker.members())
		}
		s.idleWhenEmpty(ctx)
		return
	case *actor.Stopped:
		s.idle.cancel()
		s.broker.unplace(s.placement)
		unwatch := &pb.Unwatch{User: s.user, Activation: s.activation}
		for _, address := range s.broker.members() {
			ctx.Send(actor.NewPID(address, relayName), unwatch)
		}
		s.broker.metrics.Actors.WithLabelValues(SessionKind).Dec()
		return
	case *pb.MembersLeft:
		s.forgetMembers(msg.Members)
		s.idleWhenEmpty(ctx)
		return
	case *pb.WatchMembers:
		s.watch(ctx, msg.Addresses)
		return
	case *pb.IdleCheck:
		if s.placement.moved.Load() {
			ctx.Stop(ctx.Self())
			return
		}
		s.idle.check(ctx, len(s.connections) == 0)
		return
	case *pb.Attach:
		if ctx.Sender() == nil {
			// News of a connection, not a request to admit one: kept
			// even while unsure, since nobody would send it again.
			s.attach(ctx, msg)
			return
		}
	case *pb.Detach:
		// From a relay or a closing connection: kept even while unsure,
		// since nobody would send it again.
		delete(s.connections, msg.ConnectionId)
		delete(s.unadmitted, msg.ConnectionId)
		s.idleWhenEmpty(ctx)
		return
	case *actor.Started, *actor.Stopping, *actor.Restarting:
		return
	}
	if !s.broker.serving(s.placement) {
		standDown(ctx, s.placement, &s.idle)
		return
	}
	switch msg := ctx.Message().(type) {
	case *pb.Attach:
		s.attach(ctx, msg)
	case *pb.SendToUser:
		if answer, done := s.retries.answered(msg.Sender, msg.Sequence); done {
			ctx.Respond(answer)
			return
		}
		push := &pb.Push{Frame: msg.Frame}
		for _, c := range s.connections {
			ctx.Send(c.pid, push)
		}
		answer := &pb.SentToUser{Connections: uint32(len(s.connections))}
		s.retries.remember(msg.Sender, msg.Sequence, answer)
		ctx.Respond(answer)
	case *pb.DisconnectUser:
		kick := &pb.Kick{Code: msg.Code, Reason: msg.Reason}
		for _, c := range s.connections {
			ctx.Send(c.pid, kick)
		}
		ctx.Respond(&pb.DisconnectedUser{Connections: uint32(len(s.connections))})
	case *pb.QuerySession:
		info := &pb.SessionInfo{}
		for id, c := range s.connections {
			info.Connections = append(info.Connections, &pb.SessionInfo_Connection{ConnectionId: id, Address: c.pid.Address})
		}
		ctx.Respond(info)
	}
}

// attach accepts a connection of the user, or refuses it when the user
// already holds MaxConnections admitted ones. A retried Attach of an
// admitted connection is accepted again.
func (s *session) attach(ctx actor.Context, msg *pb.Attach) {
	_, known := s.connections[msg.ConnectionId]
	_, unadmitted := s.unadmitted[msg.ConnectionId]
	admitted := len(s.connections) - len(s.unadmitted)
	if msg.MaxConnections > 0 && !msg.Admitted && !(known && !unadmitted) && admitted >= int(msg.MaxConnections) {
		delete(s.connections, msg.ConnectionId)
		delete(s.unadmitted, msg.ConnectionId)
		ctx.Respond(&pb.Attached{Refused: true, Activation: s.activation})
		return
	}
	if !s.broker.isMember(msg.Member) {
		// Its node has left: the connection is gone with it.
		if ctx.Sender() != nil {
			ctx.Respond(&pb.Attached{Refused: true, Activation: s.activation})
		}
		return
	}
	s.connections[msg.ConnectionId] = userConnection{pid: actor.NewPID(msg.Address, msg.ActorId), member: msg.Member}
	delete(s.unadmitted, msg.ConnectionId)
	if ctx.Sender() != nil {
		ctx.Respond(&pb.Attached{Activation: s.activation})
	}
}

// watch asks the relays at addresses for the user's connections and to
// tell this activation of later ones. It waits for the answers, so an
// Attach or Detach that a relay sends after answering is handled after the
// answer, in the order that it happened.
func (s *session) watch(ctx actor.Context, addresses []string) {
	self := ctx.Self()
	query := &pb.QueryUserConnections{User: s.user, WatcherAddress: self.Address, WatcherId: self.Id, Activation: s.activation}
	for address, answer := range s.broker.askRelaysAt(ctx, addresses, query, relayTimeout) {
		if res, ok := answer.(*pb.UserConnections); ok {
			for _, c := range res.Connections {
				if _, known := s.connections[c.ConnectionId]; known {
					continue // its Attach came first: the answer is older
				}
				s.connections[c.ConnectionId] = userConnection{pid: actor.NewPID(address, c.ActorId), member: res.Member}
				if !c.Admitted {
					s.unadmitted[c.ConnectionId] = struct{}{}
				}
			}
		}
	}
}

// forgetMembers drops the connections on members that left the cluster.
func (s *session) forgetMembers(members []string) {
	for id, c := range s.connections {
		if slices.Contains(members, c.member) {
			delete(s.connections, id)
			delete(s.unadmitted, id)
		}
	}
}

func (s *session) idleWhenEmpty(ctx actor.Context) {
	if len(s.connections) == 0 {
		s.idle.arm(ctx, s.broker.opts.GrainIdleTimeout)
	}
}
