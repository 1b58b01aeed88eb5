package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
)

// localConnections maps this node's connection ids to their outboxes and
// actors. Connection actors add and remove themselves; the relay reads it.
//
// It also holds the node's session watches: a session grain is active only
// while somebody needs it (a send to the user, a connection limit), and on
// activation it asks every relay for the user's connections and to be told
// of the ones that open and close later. Keeping both under one lock means
// a connection is either in that answer or told about afterwards, never
// neither.
type localConnections struct {
	mu      sync.RWMutex
	byID    map[string]*localConnection
	byUser  map[string][]*localConnection // most users hold one connection
	watches map[string]sessionWatch       // user → their active session grain
}

type localConnection struct {
	out      *client
	pid      *actor.PID
	admitted bool // accepted under the per-user limit, or there is none
}

// sessionWatch is an active session grain that follows its user's
// connections on this node; activation tells a grain from its successor.
type sessionWatch struct {
	pid        *actor.PID
	activation string
}

func newLocalConnections() *localConnections {
	return &localConnections{
		byID:    map[string]*localConnection{},
		byUser:  map[string][]*localConnection{},
		watches: map[string]sessionWatch{},
	}
}

// add registers a connection and returns the session grain to tell of it,
// or nil when no session watches the user here. A connection that has yet
// to be accepted under a per-user limit is not admitted until admit.
func (l *localConnections) add(out *client, pid *actor.PID, admitted bool) *actor.PID {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &localConnection{out: out, pid: pid, admitted: admitted}
	l.byID[out.ID] = c
	l.byUser[out.User] = append(l.byUser[out.User], c)
	return l.watches[out.User].pid
}

// remove forgets a connection and returns the session grain to tell, if any.
func (l *localConnections) remove(out *client) *actor.PID {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byID, out.ID)
	conns := l.byUser[out.User]
	for i, c := range conns {
		if c.out == out {
			conns[i] = conns[len(conns)-1]
			conns[len(conns)-1] = nil
			conns = conns[:len(conns)-1]
			break
		}
	}
	if len(conns) == 0 {
		delete(l.byUser, out.User)
	} else {
		l.byUser[out.User] = conns
	}
	return l.watches[out.User].pid
}

// admit marks a connection accepted by the session activation that
// answered its Attach. If a newer activation watches the user here, it may
// have heard of the connection before that, as not admitted: admit returns
// it, to be told.
func (l *localConnections) admit(out *client, activation string) *actor.PID {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.byID[out.ID]; c != nil {
		c.admitted = true
	}
	if w, ok := l.watches[out.User]; ok && w.activation != activation {
		return w.pid
	}
	return nil
}

func (l *localConnections) get(id string) *client {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if c := l.byID[id]; c != nil {
		return c.out
	}
	return nil
}

func (l *localConnections) ofUser(user string) *pb.UserConnections {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.ofUserLocked(user)
}

func (l *localConnections) ofUserLocked(user string) *pb.UserConnections {
	res := &pb.UserConnections{}
	for _, c := range l.byUser[user] {
		res.Connections = append(res.Connections, &pb.UserConnections_Connection{ConnectionId: c.out.ID, ActorId: c.pid.Id, Admitted: c.admitted})
	}
	return res
}

// watch makes w the user's session here and returns the user's connections
// as they are at that moment.
func (l *localConnections) watch(user string, w sessionWatch) *pb.UserConnections {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watches[user] = w
	return l.ofUserLocked(user)
}

// unwatch ends the watch of one activation; a newer one stays.
func (l *localConnections) unwatch(user, activation string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watches[user].activation == activation {
		delete(l.watches, user)
	}
}

// forgetWatchesAt drops the watches of sessions on members that left.
func (l *localConnections) forgetWatchesAt(gone map[string]struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for user, w := range l.watches {
		if _, ok := gone[w.pid.Address]; ok {
			delete(l.watches, user)
		}
	}
}

func (l *localConnections) count() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.byID)
}

func (l *localConnections) eachActor(f func(*actor.PID)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, c := range l.byID {
		f(c.pid)
	}
}

func (l *localConnections) each(f func(*client)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, c := range l.byID {
		f(c.out)
	}
}
