package transport

import (
	"runtime"
	"sync"
	"sync/atomic"
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
	opts  FlushOptions
	lanes []*flushLane
	next  atomic.Uint64
}

// FlushOptions say how a Flusher shares the core with the goroutines that
// read and answer clients.
type FlushOptions struct {
	// YieldEvery lets other goroutines run after this many sockets of a
	// round (0: never; the scheduler then preempts a long round only
	// every 10 ms). The broker yields every DefaultYieldEvery sockets, so
	// a publication's trip through its actors does not wait on a round.
	YieldEvery int
	// RepliesInline writes a reply on the replying goroutine when nothing
	// else waits for its socket, instead of just before the next round.
	RepliesInline bool
}

// DefaultYieldEvery is the broker's FlushOptions.YieldEvery: about half a
// millisecond of writes on a small VM.
const DefaultYieldEvery = 64

// flushLane is one flushing goroutine and the outboxes waiting for it:
// urgent ones (answers to clients) go before the round and between its
// slices.
type flushLane struct {
	mu         sync.Mutex
	waiting    outboxList
	urgent     outboxList
	yieldEvery int
	stopped    bool
	wake       chan struct{}
	stop       chan struct{}
	iov        iovecs // only the lane's goroutine uses it
}

// NewFlusher starts lanes flushing goroutines (one per core is right).
func NewFlusher(lanes int, opts FlushOptions) *Flusher {
	f := &Flusher{opts: opts}
	for range max(lanes, 1) {
		l := &flushLane{yieldEvery: opts.YieldEvery, wake: make(chan struct{}, 1), stop: make(chan struct{}), iov: newIovecs()}
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

// add puts an outbox that has no writer into the next round, or, if
// urgent, before it.
func (l *flushLane) add(o *Outbox, urgent bool) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		go o.drain()
		return
	}
	first := len(l.waiting.items)+len(l.urgent.items) == 0
	if urgent {
		l.urgent.items = append(l.urgent.items, o)
	} else {
		l.waiting.items = append(l.waiting.items, o)
	}
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
			l.flushUrgent()
			round := l.take(&l.waiting)
			if len(round) == 0 {
				break
			}
			for i, o := range round {
				o.flushRound(&l.iov)
				if l.yieldEvery > 0 && i%l.yieldEvery == l.yieldEvery-1 {
					runtime.Gosched()
					l.flushUrgent()
				}
			}
			l.giveBack(&l.waiting, round)
		}
	}
}

func (l *flushLane) flushUrgent() {
	urgent := l.take(&l.urgent)
	for _, o := range urgent {
		o.flushRound(&l.iov)
	}
	l.giveBack(&l.urgent, urgent)
}

// outboxList is a list the lane takes whole, so adding never waits for a
// round; the taken list's memory comes back for the next one.
type outboxList struct{ items, spare []*Outbox }

func (l *flushLane) take(list *outboxList) []*Outbox {
	l.mu.Lock()
	defer l.mu.Unlock()
	items := list.items
	list.items, list.spare = list.spare[:0], nil
	return items
}

func (l *flushLane) giveBack(list *outboxList, items []*Outbox) {
	clear(items)
	l.mu.Lock()
	defer l.mu.Unlock()
	list.spare = items[:0]
}

// handOver gives what still waits to goroutines of its own.
func (l *flushLane) handOver() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	for _, o := range append(l.waiting.items, l.urgent.items...) {
		go o.drain()
	}
	l.waiting, l.urgent = outboxList{}, outboxList{}
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
