//go:build unix

package kavariotel_test

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) the process used so far: the
// benchmarks report it per record besides the wall time, since on a shared
// machine it depends less on what else runs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
