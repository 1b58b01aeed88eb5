//go:build !unix

package tests

import "testing"

// pause needs SIGSTOP, which only Unix has.
func (s *server) pause(t testing.TB) {
	t.Helper()
	t.Skip("pausing a broker needs SIGSTOP")
}

// resume needs SIGCONT, which only Unix has.
func (s *server) resume(t testing.TB) {
	t.Helper()
	t.Skip("resuming a broker needs SIGCONT")
}
