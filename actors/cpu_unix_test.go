//go:build unix

package actors

import (
	"syscall"
	"time"
)

// processCPU is the user and system CPU time this process has used: a
// benchmark of several members in one process reports it per operation,
// which wall time per operation does not show when they wait on each other.
func processCPU() (time.Duration, bool) {
	var u syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &u) != nil {
		return 0, false
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()), true
}
