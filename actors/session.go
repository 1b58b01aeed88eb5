package actors

import (
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
	b           *Broker
	user        string
	activation  string
	connections map[string]*actor.PID // connection id → connection actor
	// Connections the relays reported before their Attach arrived: under a
	// per-user limit they count only once this activation accepts them.
	unadmitted map[string]struct{}
	idle       passivation
	retries    retries
}

func newSession(b *Broker) *session {
	return &session{b: b, connections: make(map[string]*actor.PID), unadmitted: make(map[string]struct{}),
		idle: passivation{idle: b.opts.GrainIdleTimeout}}
}

func (s *session) Receive(ctx actor.Context) {
	if _, reminder := ctx.Message().(*pb.IdleCheck); !reminder {
		s.idle.touch()
	}
	switch msg := ctx.Message().(type) {
	case *cluster.ClusterInit:
		s.user = msg.Identity.Identity
		s.activation = s.b.newActivation()
		s.b.metrics.Actors.WithLabelValues(SessionKind).Inc()
		s.b.sessions.Store(s.user, ctx.Self())
		s.watch(ctx, s.b.members())
		s.idleWhenEmpty(ctx)
	case *actor.Stopped:
		s.idle.cancel()
		s.b.sessions.CompareAndDelete(s.user, ctx.Self())
		unwatch := &pb.Unwatch{User: s.user, Activation: s.activation}
		for _, address := range s.b.members() {
			ctx.Send(actor.NewPID(address, relayName), unwatch)
		}
		s.b.metrics.Actors.WithLabelValues(SessionKind).Dec()
	case *pb.WatchMembers:
		s.watch(ctx, msg.Addresses)
	case *pb.Attach:
		s.attach(ctx, msg)
	case *pb.Detach:
		delete(s.connections, msg.ConnectionId)
		delete(s.unadmitted, msg.ConnectionId)
		s.idleWhenEmpty(ctx)
	case *pb.SendToUser:
		if answer, done := s.retries.answered(msg.Sender, msg.Sequence); done {
			ctx.Respond(answer)
			return
		}
		s.pruneDeadNodes()
		push := &pb.Push{Frame: msg.Frame}
		for _, pid := range s.connections {
			ctx.Send(pid, push)
		}
		answer := &pb.SentToUser{Connections: uint32(len(s.connections))}
		s.retries.remember(msg.Sender, msg.Sequence, answer)
		ctx.Respond(answer)
	case *pb.DisconnectUser:
		s.pruneDeadNodes()
		kick := &pb.Kick{Code: msg.Code, Reason: msg.Reason}
		for _, pid := range s.connections {
			ctx.Send(pid, kick)
		}
		ctx.Respond(&pb.DisconnectedUser{Connections: uint32(len(s.connections))})
	case *pb.QuerySession:
		s.pruneDeadNodes()
		info := &pb.SessionInfo{}
		for id, pid := range s.connections {
			info.Connections = append(info.Connections, &pb.SessionInfo_Connection{ConnectionId: id, Address: pid.Address})
		}
		ctx.Respond(info)
	case *pb.IdleCheck:
		s.idle.check(ctx, len(s.connections) == 0)
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
		ctx.Respond(&pb.Attached{Connections: uint32(admitted), Refused: true, Activation: s.activation})
		return
	}
	s.connections[msg.ConnectionId] = actor.NewPID(msg.Address, msg.ActorId)
	delete(s.unadmitted, msg.ConnectionId)
	if ctx.Sender() != nil {
		ctx.Respond(&pb.Attached{Connections: uint32(len(s.connections) - len(s.unadmitted)), Activation: s.activation})
	}
}

// watch asks the relays at addresses for the user's connections and to
// tell this activation of later ones. It waits for the answers, so an
// Attach or Detach that a relay sends after answering is handled after the
// answer, in the order that it happened.
func (s *session) watch(ctx actor.Context, addresses []string) {
	self := ctx.Self()
	query := &pb.QueryUserConnections{User: s.user, WatcherAddress: self.Address, WatcherId: self.Id, Activation: s.activation}
	for address, answer := range s.b.askRelaysAt(ctx, addresses, query, relayTimeout) {
		if res, ok := answer.(*pb.UserConnections); ok {
			for _, c := range res.Connections {
				if _, known := s.connections[c.ConnectionId]; known {
					continue // its Attach came first: the answer is older
				}
				s.connections[c.ConnectionId] = actor.NewPID(address, c.ActorId)
				if !c.Admitted {
					s.unadmitted[c.ConnectionId] = struct{}{}
				}
			}
		}
	}
}

// pruneDeadNodes forgets connections on nodes that left the cluster.
func (s *session) pruneDeadNodes() {
	for id, pid := range s.connections {
		if !s.b.isAlive(pid.Address) {
			delete(s.connections, id)
			delete(s.unadmitted, id)
		}
	}
}

func (s *session) idleWhenEmpty(ctx actor.Context) {
	if len(s.connections) == 0 {
		s.idle.arm(ctx, s.b.opts.GrainIdleTimeout)
	}
}
