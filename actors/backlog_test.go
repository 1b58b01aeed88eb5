package actors

import (
	"sync/atomic"
	"testing"
	"time"
)

// enterReturns reports whether enter returns within wait.
func enterReturns(b *commandBacklog, wait time.Duration) (returned chan struct{}, ok bool) {
	returned = make(chan struct{})
	go func() { b.enter(); close(returned) }()
	select {
	case <-returned:
		return returned, true
	case <-time.After(wait):
		return returned, false
	}
}

func TestCommandBacklogHoldsTheReaderUntilHalfIsHandled(t *testing.T) {
	var b commandBacklog
	for range maxCommandBacklog {
		b.enter()
	}
	returned, ok := enterReturns(&b, 50*time.Millisecond)
	if ok {
		t.Fatal("the reader went on with a full backlog")
	}
	for range maxCommandBacklog + 1 - resumeCommandBacklog - 1 {
		b.leave()
	}
	select {
	case <-returned:
		t.Fatal("the reader went on before the backlog was down to half")
	case <-time.After(50 * time.Millisecond):
	}
	b.leave()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader still waits with the backlog at half")
	}
}

func TestCommandBacklogLetsTheReaderGoWhenTheActorStops(t *testing.T) {
	var b commandBacklog
	for range maxCommandBacklog {
		b.enter()
	}
	returned, _ := enterReturns(&b, 0)
	b.stop()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader still waits for a stopped actor")
	}
	if _, ok := enterReturns(&b, 5*time.Second); !ok {
		t.Fatal("the reader waits after the actor stopped")
	}
}

// One reader and one actor at full speed: the actor never has more than
// the limit queued, and no wake-up is lost (a lost one hangs the reader).
func TestCommandBacklogUnderLoad(t *testing.T) {
	var b commandBacklog
	mailbox := make(chan int, 4*maxCommandBacklog)
	var queued, most atomic.Int32
	const commands = 200_000
	go func() {
		for i := range commands {
			b.enter()
			queued.Add(1)
			mailbox <- i
		}
		close(mailbox)
	}()
	handled := make(chan int)
	go func() {
		n := 0
		for range mailbox {
			if q := queued.Add(-1) + 1; q > most.Load() {
				most.Store(q)
			}
			n++
			b.leave()
		}
		handled <- n
	}()
	select {
	case n := <-handled:
		if n != commands {
			t.Fatalf("handled %d of %d", n, commands)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("stuck with %d queued: a wake-up was lost", queued.Load())
	}
	if most.Load() > maxCommandBacklog {
		t.Fatalf("%d commands queued at once, limit %d", most.Load(), maxCommandBacklog)
	}
}
