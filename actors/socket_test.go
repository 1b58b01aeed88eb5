package actors

import (
	"sync"
	"sync/atomic"

	"github.com/switchboard/switchboard/transport"
)

// memoryOutbox is an Outbox that keeps a connection's frames in memory,
// so actor tests read what a client would without a socket. Like the real
// one it refuses frames once closed, and once frames are full.
type memoryOutbox struct {
	frames chan []byte // every frame pushed or replied, in order; closed by Close

	mu     sync.Mutex
	closed bool
}

func newMemoryOutbox(capacity int) *memoryOutbox {
	return &memoryOutbox{frames: make(chan []byte, capacity)}
}

func (o *memoryOutbox) Push(frame []byte) bool  { return o.queue(frame) }
func (o *memoryOutbox) Reply(frame []byte) bool { return o.queue(frame) }

func (o *memoryOutbox) queue(frame []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	select {
	case o.frames <- frame:
		return true
	default:
		return false
	}
}

func (o *memoryOutbox) Close(uint16, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = true
	close(o.frames)
}

// payload is the JSON text of a frame as the client reads it.
func payload(frame []byte) string { return string(transport.FramePayload(frame)) }

// countingOutbox is an Outbox that only counts what it is given: the
// cheapest sink, for benchmarks of what the actors themselves cost.
type countingOutbox struct{ frames atomic.Int64 }

func (o *countingOutbox) Push([]byte) bool {
	o.frames.Add(1)
	return true
}

func (o *countingOutbox) Reply(frame []byte) bool { return o.Push(frame) }
func (o *countingOutbox) Close(uint16, string)    {}
