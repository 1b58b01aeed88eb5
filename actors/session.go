package actors

import (
	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// session is the grain for one user: where each of the user's connections
// lives, wherever in the cluster, so one message reaches all their tabs
// and devices.
type session struct {
	b           *Broker
	user        string
	connections map[string]*actor.PID // connection id → connection actor
}

func newSession(b *Broker) *session {
	return &session{b: b, connections: make(map[string]*actor.PID)}
}

func (s *session) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *cluster.ClusterInit:
		s.user = msg.Identity.Identity
		s.b.metrics.Actors.WithLabelValues(SessionKind).Inc()
		s.idleWhenEmpty(ctx)
	case *actor.Stopped:
		s.b.metrics.Actors.WithLabelValues(SessionKind).Dec()
	case *pb.Attach:
		if _, known := s.connections[msg.ConnectionId]; !known && msg.MaxConnections > 0 && len(s.connections) >= int(msg.MaxConnections) {
			ctx.Respond(&pb.Attached{Connections: uint32(len(s.connections)), Refused: true})
			return
		}
		s.connections[msg.ConnectionId] = actor.NewPID(msg.Address, msg.ActorId)
		ctx.SetReceiveTimeout(0)
		ctx.Respond(&pb.Attached{Connections: uint32(len(s.connections))})
	case *pb.Detach:
		delete(s.connections, msg.ConnectionId)
		s.idleWhenEmpty(ctx)
	case *pb.SendToUser:
		push := &pb.Push{Frame: msg.Frame}
		for _, pid := range s.connections {
			ctx.Send(pid, push)
		}
		ctx.Respond(&pb.SentToUser{Connections: uint32(len(s.connections))})
	case *pb.DisconnectUser:
		kick := &pb.Kick{Code: msg.Code, Reason: msg.Reason}
		for _, pid := range s.connections {
			ctx.Send(pid, kick)
		}
		ctx.Respond(&pb.DisconnectedUser{Connections: uint32(len(s.connections))})
	case *pb.QuerySession:
		info := &pb.SessionInfo{}
		for id, pid := range s.connections {
			info.Connections = append(info.Connections, &pb.SessionInfo_Connection{ConnectionId: id, Address: pid.Address})
		}
		ctx.Respond(info)
	case *actor.ReceiveTimeout:
		if len(s.connections) == 0 {
			ctx.Stop(ctx.Self())
		}
	}
}

func (s *session) idleWhenEmpty(ctx actor.Context) {
	if len(s.connections) == 0 {
		ctx.SetReceiveTimeout(s.b.opts.GrainIdleTimeout)
	}
}
