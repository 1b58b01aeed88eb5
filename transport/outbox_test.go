package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns the server and client ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// readFrame reads one unmasked frame: opcode and payload.
func readFrame(r *bufio.Reader) (byte, []byte, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := int(head[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(ext[:]))
	}
	payload := make([]byte, n)
	_, err := io.ReadFull(r, payload)
	return head[0] & 0x0f, payload, err
}

var roomy = OutboxLimits{MaxFrames: 100000, MaxBytes: 64 << 20, WriteTimeout: 5 * time.Second}

// writePaths runs a test with each way an outbox gets written: by a
// goroutine of its own, and in a Flusher's rounds (with replies ahead of
// the round, or written by the replying goroutine).
func writePaths(t *testing.T, test func(t *testing.T, flusher *Flusher)) {
	t.Run("own writer", func(t *testing.T) { test(t, nil) })
	for name, opts := range map[string]FlushOptions{
		"flusher":                {YieldEvery: 2},
		"flusher replies inline": {RepliesInline: true},
	} {
		t.Run(name, func(t *testing.T) {
			f := NewFlusher(2, opts)
			t.Cleanup(f.Stop)
			test(t, f)
		})
	}
}

func TestOutboxDeliversInOrder(t *testing.T) { writePaths(t, testOutboxDeliversInOrder) }

func testOutboxDeliversInOrder(t *testing.T, flusher *Flusher) {
	server, client := tcpPair(t)
	out := NewOutbox(server, "c1", "u", roomy, flusher, nil, nil)
	const n = 5000
	go func() {
		for i := range n {
			out.Push(PongFrame([]byte(strconv.Itoa(i))))
		}
	}()
	r := bufio.NewReader(client)
	for i := range n {
		_, payload, err := readFrame(r)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := `{"type":"pong","id":` + strconv.Itoa(i) + `}`; string(payload) != want {
			t.Fatalf("frame %d = %s, want %s", i, payload, want)
		}
	}
}

func TestOutboxCloseSendsQueuedFramesThenCloseFrame(t *testing.T) {
	writePaths(t, testOutboxCloseSendsQueuedFramesThenCloseFrame)
}

func testOutboxCloseSendsQueuedFramesThenCloseFrame(t *testing.T, flusher *Flusher) {
	server, client := tcpPair(t)
	out := NewOutbox(server, "c1", "u", roomy, flusher, nil, nil)
	out.Push(PongFrame([]byte(`1`)))
	out.Push(PongFrame([]byte(`2`)))
	out.Close(CloseKicked, "bye")
	if out.Push(PongFrame([]byte(`3`))) {
		t.Fatal("push after Close was accepted")
	}
	r := bufio.NewReader(client)
	for _, want := range []string{`{"type":"pong","id":1}`, `{"type":"pong","id":2}`} {
		if _, payload, err := readFrame(r); err != nil || string(payload) != want {
			t.Fatalf("got %s %v, want %s", payload, err, want)
		}
	}
	op, payload, err := readFrame(r)
	if err != nil || op != 0x8 || binary.BigEndian.Uint16(payload) != CloseKicked || string(payload[2:]) != "bye" {
		t.Fatalf("close frame: op %x payload %q err %v", op, payload, err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the close frame the server should half-close, got %v", err)
	}
}

func TestOutboxOverflowCutsOffAStalledReader(t *testing.T) {
	writePaths(t, testOutboxOverflowCutsOffAStalledReader)
}

func testOutboxOverflowCutsOffAStalledReader(t *testing.T, flusher *Flusher) {
	server, client := tcpPair(t) // the client end does not read
	var overflows atomic.Int32
	limits := OutboxLimits{MaxFrames: 32, MaxBytes: 1 << 20, WriteTimeout: 5 * time.Second}
	out := NewOutbox(server, "c1", "u", limits, flusher, nil, func(*Outbox) { overflows.Add(1) })
	frame := MessageFrame("c", "", []byte(`"`+strings.Repeat("x", 32<<10)+`"`), 1, "e", 1)
	pushed := 0
	for ; pushed < 100000 && out.Push(frame); pushed++ {
	}
	if pushed == 100000 {
		t.Fatal("a reader that never reads was never cut off")
	}
	deadline := time.Now().Add(5 * time.Second)
	for overflows.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if overflows.Load() != 1 {
		t.Fatalf("overflow callbacks = %d", overflows.Load())
	}
	if out.Push(frame) {
		t.Fatal("push after overflow accepted")
	}
	// The connection is dropped: draining the client end reaches its end.
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, client)
	var timeout net.Error
	if errors.As(err, &timeout) && timeout.Timeout() {
		t.Fatal("the stalled connection was not closed")
	}
}

// A socket too full to take a write whole: the frames cut short are
// finished, in order, replies included, once the client reads again.
func TestOutboxKeepsFramesWholeOnAFullSocket(t *testing.T) {
	writePaths(t, func(t *testing.T, flusher *Flusher) {
		server, client := tcpPair(t)
		out := NewOutbox(server, "c1", "u", roomy, flusher, nil, nil)
		const n = 400
		big := strings.Repeat("x", 40<<10) // 400 of these are far more than the socket buffers hold
		for i := range n {
			data := []byte(`"` + strconv.Itoa(i) + big + `"`)
			if i%7 == 0 {
				out.Reply(MessageFrame("c", "", data, uint64(i), "e", 1))
			} else {
				out.Push(MessageFrame("c", "", data, uint64(i), "e", 1))
			}
		}
		time.Sleep(100 * time.Millisecond) // the socket fills up before the client reads
		r := bufio.NewReader(client)
		_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
		for i := range n {
			_, payload, err := readFrame(r)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if !strings.Contains(string(payload), `"data":"`+strconv.Itoa(i)+"x") || !strings.HasSuffix(string(payload), `}`) {
				t.Fatalf("frame %d is not whole or not in order: %.80s…", i, payload)
			}
		}
	})
}

// After a spell of waiting for a full socket, which sets a write deadline,
// the outbox still writes once that deadline has passed.
func TestOutboxWritesAfterAFullSocketsDeadlinePassed(t *testing.T) {
	writePaths(t, func(t *testing.T, flusher *Flusher) {
		server, client := tcpPair(t)
		limits := OutboxLimits{MaxFrames: 100000, MaxBytes: 64 << 20, WriteTimeout: 200 * time.Millisecond}
		out := NewOutbox(server, "c1", "u", limits, flusher, nil, nil)
		big := MessageFrame("c", "", []byte(`"`+strings.Repeat("x", 40<<10)+`"`), 1, "e", 1)
		for range 100 {
			out.Push(big)
		}
		r := bufio.NewReader(client)
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := range 100 {
			if _, _, err := readFrame(r); err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
		}
		time.Sleep(300 * time.Millisecond) // past any deadline set while the socket was full
		out.Reply(PongFrame([]byte(`7`)))
		if _, payload, err := readFrame(r); err != nil || string(payload) != `{"type":"pong","id":7}` {
			t.Fatalf("after the deadline passed: %s %v", payload, err)
		}
	})
}

// BenchmarkOutboxBurst: bursts of 64 deliveries to one socket, each
// burst drained in one vectored write. Reported per delivery.
func BenchmarkOutboxBurst(b *testing.B) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		c, _ := ln.Accept()
		_, _ = io.Copy(io.Discard, c)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	out := NewOutbox(conn, "c1", "u", roomy, nil, nil, nil)
	frame := MessageFrame("game:1", "p", []byte(`{"x":1,"y":2,"pad":"0123456789012345678901234567890123"}`), 1, "e", 1)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		out.Push(frame)
		if n++; n%64 == 0 {
			waitUntilWritten(out)
		}
	}
}

// BenchmarkFlusherRound: 64 sockets with 8 deliveries queued on each,
// written in a flusher round (one writev per socket). Reported per
// delivery; compare BenchmarkOutboxBurst.
func BenchmarkFlusherRound(b *testing.B) {
	const sockets, perSocket = 64, 8
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	flusher := NewFlusher(1, FlushOptions{YieldEvery: DefaultYieldEvery})
	defer flusher.Stop()
	outs := make([]*Outbox, sockets)
	for i := range outs {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		outs[i] = NewOutbox(conn, "c", "u", roomy, flusher, nil, nil)
	}
	frame := MessageFrame("game:1", "p", []byte(`{"x":1,"y":2,"pad":"0123456789012345678901234567890123"}`), 1, "e", 1)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		outs[n%sockets].Push(frame)
		if n++; n%(sockets*perSocket) == 0 {
			for _, out := range outs {
				waitUntilWritten(out)
			}
		}
	}
}

// waitUntilWritten waits until nothing is queued or being written.
func waitUntilWritten(out *Outbox) {
	for {
		out.mu.Lock()
		idle := !out.writing
		out.mu.Unlock()
		if idle {
			return
		}
		runtime.Gosched()
	}
}
