package transport

import (
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Flusher writes the queued frames of many outboxes in rounds. A round
// takes every outbox that got frames since the last one and gives each a
// single vectored write that does not wait: on a busy node, frames keep
// arriving while a round runs, so the next round finds several queued for
// each socket and sends them in one system call, which is what a delivery
// costs most. A socket that cannot take everything at once is handed to a
// goroutine of its own that waits for it (with the write timeout), so one
// slow client never holds up a round.
type Flusher struct {
	lanes []*flushLane
	next  atomic.Uint64
}

// flushLane is one flushing goroutine and the outboxes waiting for it.
type flushLane struct {
	mu      sync.Mutex
	waiting []*Outbox
	spare   []*Outbox
	stopped bool
	wake    chan struct{}
	stop    chan struct{}
	iov     []syscall.Iovec // only the lane's goroutine uses it
}

// maxIovecs is Linux's IOV_MAX: the most buffers one writev takes.
const maxIovecs = 1024

// NewFlusher starts lanes flushing goroutines (one per core is right).
func NewFlusher(lanes int) *Flusher {
	f := &Flusher{}
	for range max(lanes, 1) {
		l := &flushLane{wake: make(chan struct{}, 1), stop: make(chan struct{}), iov: make([]syscall.Iovec, 0, 64)}
		f.lanes = append(f.lanes, l)
		go l.run()
	}
	return f
}

// Stop ends the flushing goroutines; outboxes flushed after it write with
// goroutines of their own.
func (f *Flusher) Stop() {
	for _, l := range f.lanes {
		close(l.stop)
	}
}

func (f *Flusher) lane() *flushLane {
	return f.lanes[f.next.Add(1)%uint64(len(f.lanes))]
}

// add puts an outbox that has no writer into the next round.
func (l *flushLane) add(o *Outbox) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		go o.drain()
		return
	}
	l.waiting = append(l.waiting, o)
	first := len(l.waiting) == 1
	l.mu.Unlock()
	if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func (l *flushLane) run() {
	for {
		select {
		case <-l.stop:
			l.handOver()
			return
		case <-l.wake:
		}
		for {
			l.mu.Lock()
			round := l.waiting
			l.waiting, l.spare = l.spare[:0], nil
			l.mu.Unlock()
			if len(round) == 0 {
				break
			}
			for i, o := range round {
				o.flushRound(&l.iov)
				round[i] = nil
			}
			l.mu.Lock()
			l.spare = round[:0]
			l.mu.Unlock()
		}
	}
}

// handOver gives what still waits to goroutines of its own.
func (l *flushLane) handOver() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	for _, o := range l.waiting {
		go o.drain()
	}
	l.waiting = nil
}

// writeWithoutWaiting writes frames to the socket with as few writev calls
// as it takes, never waiting for room: it returns how many bytes the
// socket took and an error other than "would block".
func writeWithoutWaiting(raw syscall.RawConn, frames [][]byte, iov *[]syscall.Iovec) (written int, err error) {
	for len(frames) > 0 {
		chunk := frames[:min(len(frames), maxIovecs)]
		frames = frames[len(chunk):]
		want := 0
		vec := (*iov)[:0]
		for _, frame := range chunk {
			v := syscall.Iovec{Base: &frame[0]}
			v.SetLen(len(frame))
			vec = append(vec, v)
			want += len(frame)
		}
		*iov = vec
		var n uintptr
		var errno syscall.Errno
		if rawErr := raw.Write(func(fd uintptr) bool {
			for {
				n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&vec[0])), uintptr(len(vec)))
				if errno != syscall.EINTR {
					return true
				}
			}
		}); rawErr != nil {
			return written, rawErr
		}
		clear(vec) // the frames are not ours to keep alive
		switch {
		case errno == syscall.EAGAIN:
			return written, nil
		case errno != 0:
			return written, errno
		}
		written += int(n)
		if int(n) < want {
			return written, nil
		}
	}
	return written, nil
}

// unwritten is what of frames remains after the first written bytes.
func unwritten(frames [][]byte, written int) [][]byte {
	for i, frame := range frames {
		if written < len(frame) {
			rest := make([][]byte, 0, len(frames)-i)
			rest = append(rest, frame[written:])
			return append(rest, frames[i+1:]...)
		}
		written -= len(frame)
	}
	return nil
}
