package actors

import (
	"sync"
	"sync/atomic"
)

// Commands of one connection that may wait for its actor, the one being
// read included; when more arrive, the socket is not read until the backlog
// is down to half. A client that
// sends faster than the broker handles its commands is then slowed by TCP
// instead of queuing without bound in the actor's mailbox, where answers
// from grains would also wait behind the whole queue.
const (
	maxCommandBacklog    = 64
	resumeCommandBacklog = maxCommandBacklog / 2
)

// commandBacklog counts the commands handed to a connection actor and not
// yet handled. The socket's reader enters each command; the actor leaves
// it when done.
type commandBacklog struct {
	waiting     atomic.Int32
	readerWaits atomic.Bool // set before the reader looks at waiting a last time
	mu          sync.Mutex
	resume      chan struct{} // closed to let the waiting reader go on
	stopped     bool          // the actor is gone: nothing waits any more
}

// enter counts one more command, first waiting while the backlog is full.
func (b *commandBacklog) enter() {
	if b.waiting.Add(1) <= maxCommandBacklog {
		return
	}
	b.mu.Lock()
	resume := make(chan struct{})
	b.resume = resume
	b.readerWaits.Store(true)
	// A leave that came before readerWaits was set did not wake anyone:
	// look again now that every later one will.
	if b.stopped || b.waiting.Load() <= resumeCommandBacklog {
		b.readerWaits.Store(false)
		b.resume = nil
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	<-resume
}

// leave counts one command handled.
func (b *commandBacklog) leave() {
	if b.waiting.Add(-1) <= resumeCommandBacklog && b.readerWaits.Load() {
		b.wake()
	}
}

// stop lets the reader go on for good: nothing handles commands any more.
func (b *commandBacklog) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.wake()
}

func (b *commandBacklog) wake() {
	b.mu.Lock()
	// Looked at again under the lock: a wake-up meant for an earlier wait
	// must not end a later one.
	if b.resume != nil && (b.stopped || b.waiting.Load() <= resumeCommandBacklog) {
		close(b.resume)
		b.resume = nil
		b.readerWaits.Store(false)
	}
	b.mu.Unlock()
}
