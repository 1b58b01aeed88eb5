//go:build unix

package tests

import (
	"syscall"
	"testing"
)

// pause freezes the broker with SIGSTOP, as a long GC pause, a stalled VM or
// a container being checkpointed would: its sockets stay open and it
// answers nothing. A cleanup thaws it so that it can be stopped.
func (s *server) pause(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", s.addr, err)
	}
	t.Cleanup(func() { _ = s.cmd.Process.Signal(syscall.SIGCONT) })
}

// resume thaws a paused broker with SIGCONT.
func (s *server) resume(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT %s: %v", s.addr, err)
	}
}
