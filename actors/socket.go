package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// Outbox is where a client connection's encoded frames leave: the seam
// between the actors and the socket. transport.Outbox is the real one;
// tests use an in-memory one. Push is called once per subscriber per
// publication, so implementations must not allocate in it.
type Outbox interface {
	// Push queues a frame; false: it was dropped (the outbox is closing
	// or overflowed, which closes it).
	Push(frame []byte) bool
	// Reply queues a frame that answers the client's own request, which
	// may go ahead of bulk deliveries.
	Reply(frame []byte) bool
	// Close sends what is queued, then a close frame with code and reason.
	Close(code uint16, reason string)
}

var _ Outbox = (*transport.Outbox)(nil)

// client is one client connection as the actors know it: its id, its
// user, and the outbox its frames leave through.
type client struct {
	ID   string
	User string
	Outbox
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
		out.Close(transport.CloseInternalError, "internal error")
		return closedInbound{}
	}
	return &connectionInbox{root: b.system.Root, pid: pid, backlog: backlog}
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
