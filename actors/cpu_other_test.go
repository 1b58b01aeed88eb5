//go:build !unix

package actors

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
