//go:build !linux

package transport

import (
	"net"
	"syscall"
)

// Elsewhere than on Linux an outbox has no write that never waits: each
// writes from a goroutine of its own (with the write timeout), as on
// Linux an outbox whose connection has no descriptor does, and the
// flusher's lanes stay idle.

type iovecs struct{}

func newIovecs() iovecs { return iovecs{} }

// rawSocket is nil: no outbox joins a flusher round.
func rawSocket(net.Conn) syscall.RawConn { return nil }

// writeWithoutWaiting takes nothing, so a writer goroutine that waits
// writes it all; only outboxes with a raw socket call it.
func writeWithoutWaiting(syscall.RawConn, [][]byte, *iovecs) (int, error) { return 0, nil }
