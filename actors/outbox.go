package actors

import "github.com/switchboard/switchboard/transport"

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
