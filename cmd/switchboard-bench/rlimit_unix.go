//go:build unix

package main

import "syscall"

// raiseFileLimit lifts the open-file limit to its hard maximum: 10,000
// connections need 10,000 descriptors (and a server started from here inherits it).
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
