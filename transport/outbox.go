package transport

import (
	"net"
	"sync"
	"syscall"
	"time"
)

const (
	closeHandshakeGrace = 2 * time.Second
	slowConsumerGrace   = time.Second
)

// OutboxLimits bound what may wait for one slow socket.
type OutboxLimits struct {
	MaxFrames    int
	MaxBytes     int
	WriteTimeout time.Duration
}

// Outbox is a connection's bounded queue of encoded frames. Producers
// (relays, the connection actor) push without blocking, and everything
// queued leaves in a single vectored write, so a burst of deliveries costs
// one syscall: with a Flusher, in its next round; without one (or once the
// socket is full), from a writer goroutine started only while frames wait.
type Outbox struct {
	ID   string
	User string
	Info TokenInfo // what the user's token says to show in presence

	conn       net.Conn
	raw        syscall.RawConn // nil: the socket has no descriptor to write without waiting
	lane       *flushLane      // nil: no Flusher
	inline     bool            // replies are written on the replying goroutine
	limits     OutboxLimits
	metrics    *Metrics
	onOverflow func(*Outbox)

	mu         sync.Mutex
	queue      [][]byte
	spare      [][]byte
	queued     int
	writing    bool
	closing    bool // no more frames accepted
	closeFrame []byte
	broken     bool      // the socket failed or was closed under us
	deadline   time.Time // the write deadline now set on the socket
}

// NewOutbox wraps conn, an upgraded WebSocket connection, for connection
// id of user; flusher may be nil.
func NewOutbox(conn net.Conn, id, user string, limits OutboxLimits, flusher *Flusher, metrics *Metrics, onOverflow func(*Outbox)) *Outbox {
	o := &Outbox{ID: id, User: user, conn: conn, limits: limits, metrics: metrics, onOverflow: onOverflow}
	if raw := rawSocket(conn); raw != nil {
		o.raw = raw
		if flusher != nil {
			o.lane = flusher.lane()
			o.inline = flusher.opts.RepliesInline
		}
	}
	return o
}

// Push queues a frame; false means it was dropped because the outbox is
// closing. A push that overflows the limits cuts the connection off.
func (o *Outbox) Push(frame []byte) bool { return o.push(frame, false) }

// Reply queues a frame that answers the client's own request. An outbox
// with nothing else waiting goes ahead of the flusher's round, so a client
// pacing itself by the answers is not held up by bulk deliveries to others.
func (o *Outbox) Reply(frame []byte) bool { return o.push(frame, true) }

func (o *Outbox) push(frame []byte, urgent bool) bool {
	o.mu.Lock()
	if o.closing {
		o.mu.Unlock()
		return false
	}
	if len(o.queue) >= o.limits.MaxFrames || o.queued+len(frame) > o.limits.MaxBytes {
		o.overflowLocked()
		o.mu.Unlock()
		return false
	}
	if urgent && o.inline && !o.writing {
		o.writing = true
		o.mu.Unlock()
		o.writeNow([][]byte{frame}, nil)
		return true
	}
	o.queue = append(o.queue, frame)
	o.queued += len(frame)
	start := !o.writing
	o.writing = true
	o.mu.Unlock()
	if start {
		o.schedule(urgent)
	}
	return true
}

// schedule finds a writer for frames that have none: the next round of
// the flusher, or a goroutine of their own.
func (o *Outbox) schedule(urgent bool) {
	if o.lane != nil {
		o.lane.add(o, urgent)
		return
	}
	go o.drain()
}

// flushRound is the outbox's turn in a flusher round.
func (o *Outbox) flushRound(iov *iovecs) {
	o.mu.Lock()
	if o.broken || (len(o.queue) == 0 && o.closeFrame == nil) {
		o.writing = false
		o.mu.Unlock()
		return
	}
	if o.closing {
		// The close handshake may wait on the socket: not in a round.
		o.mu.Unlock()
		go o.drain()
		return
	}
	batch := o.queue
	o.queue, o.spare = o.spare[:0], nil
	o.queued = 0
	o.mu.Unlock()
	o.writeNow(batch, iov)
}

// writeNow writes batch, which this goroutine owns as the outbox's writer,
// without waiting for the socket; what the socket does not take goes back
// to the front of the queue for a writer goroutine that waits.
func (o *Outbox) writeNow(batch [][]byte, iov *iovecs) {
	want := 0
	for _, frame := range batch {
		want += len(frame)
	}
	written, err := writeWithoutWaiting(o.raw, batch, iov)
	if err != nil {
		o.fail()
		return
	}
	if o.metrics != nil {
		o.metrics.SocketWrites.Inc()
	}
	if written < want {
		rest := unwritten(batch, written)
		if o.metrics != nil {
			o.metrics.FramesOut.Add(float64(len(batch) - len(rest)))
			o.metrics.FullSocketWrites.Inc()
		}
		o.mu.Lock()
		if !o.broken { // even when closing: a frame cut short must be finished
			o.queue = append(rest, o.queue...)
			for _, frame := range rest {
				o.queued += len(frame)
			}
		}
		o.mu.Unlock()
		go o.drain()
		return
	}
	if o.metrics != nil {
		o.metrics.FramesOut.Add(float64(len(batch)))
	}
	clear(batch)
	o.mu.Lock()
	if o.spare == nil && cap(batch) > 1 {
		o.spare = batch[:0]
	}
	more := len(o.queue) > 0 && !o.broken
	closing := o.closing && !o.broken
	if !more && !closing {
		o.writing = false
	}
	o.mu.Unlock()
	switch {
	case closing:
		go o.drain()
	case more:
		o.schedule(false)
	}
}

// fail marks the outbox dead after a write error and closes the socket.
func (o *Outbox) fail() {
	o.mu.Lock()
	o.broken, o.closing, o.writing = true, true, false
	o.queue, o.queued = nil, 0
	o.mu.Unlock()
	_ = o.conn.Close()
}

// overflowLocked drops what waits and closes with CloseSlowConsumer. The
// writer is likely stuck on a full socket: a short deadline frees it, and
// the close frame is only sent if the socket takes it within that grace.
func (o *Outbox) overflowLocked() {
	o.closing = true
	o.queue, o.queued = nil, 0
	o.closeFrame = CloseFrame(CloseSlowConsumer, "slow consumer")
	_ = o.conn.SetWriteDeadline(time.Now().Add(slowConsumerGrace))
	if o.onOverflow != nil {
		go o.onOverflow(o)
	}
	if !o.writing {
		o.writing = true
		go o.drain()
	}
}

// Close sends what is queued, then a close frame with code and reason,
// then ends the connection.
func (o *Outbox) Close(code uint16, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		return
	}
	o.closing = true
	o.closeFrame = CloseFrame(code, reason)
	if !o.writing {
		o.writing = true
		go o.drain()
	}
}

// socketGone marks the outbox dead after the socket closed.
func (o *Outbox) socketGone() {
	o.mu.Lock()
	o.closing, o.broken = true, true
	o.queue, o.queued = nil, 0
	o.mu.Unlock()
}

func (o *Outbox) drain() {
	for {
		o.mu.Lock()
		if len(o.queue) == 0 || o.broken {
			closeFrame := o.closeFrame
			o.closeFrame = nil
			if closeFrame == nil || o.broken {
				o.writing = false
				if !o.deadline.IsZero() && !o.closing {
					// The socket goes back to writes that never wait,
					// which a stale deadline would fail.
					o.deadline = time.Time{}
					_ = o.conn.SetWriteDeadline(o.deadline)
				}
				o.mu.Unlock()
				return
			}
			o.mu.Unlock()
			o.finish(closeFrame)
			o.mu.Lock()
			o.writing = false
			o.mu.Unlock()
			return
		}
		batch := o.queue
		o.queue, o.spare = o.spare[:0], nil
		o.queued = 0
		o.mu.Unlock()

		if !o.write(batch) {
			o.fail()
			return
		}
		clear(batch)
		o.mu.Lock()
		if o.spare == nil {
			o.spare = batch[:0]
		}
		o.mu.Unlock()
	}
}

func (o *Outbox) write(batch [][]byte) bool {
	if o.limits.WriteTimeout > 0 {
		// Re-armed only once half of it is used up: a write may then block
		// between half and all of WriteTimeout, and a busy socket does not
		// pay for a new deadline on every batch. Under the lock, so an
		// overflow's shorter deadline is never undone.
		o.mu.Lock()
		if now := time.Now(); !o.closing && o.deadline.Sub(now) < o.limits.WriteTimeout/2 {
			o.deadline = now.Add(o.limits.WriteTimeout)
			_ = o.conn.SetWriteDeadline(o.deadline)
		}
		o.mu.Unlock()
	}
	buffers := net.Buffers(batch)
	_, err := buffers.WriteTo(o.conn)
	if err == nil && o.metrics != nil {
		o.metrics.FramesOut.Add(float64(len(batch)))
		o.metrics.SocketWrites.Inc()
	}
	return err == nil
}

// finish writes the close frame, then half-closes so the client's close
// reply can still arrive; the read loop ends on it or on the grace deadline.
func (o *Outbox) finish(closeFrame []byte) {
	_ = o.conn.SetWriteDeadline(time.Now().Add(slowConsumerGrace))
	if _, err := o.conn.Write(closeFrame); err != nil {
		_ = o.conn.Close()
		return
	}
	if tcp, ok := o.conn.(interface{ CloseWrite() error }); ok {
		_ = tcp.CloseWrite()
		_ = o.conn.SetReadDeadline(time.Now().Add(closeHandshakeGrace))
		return
	}
	_ = o.conn.Close()
}
