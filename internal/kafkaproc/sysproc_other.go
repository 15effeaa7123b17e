//go:build unix && !linux

package kafkaproc

import "syscall"

// childSysProcAttr puts the child in its own process group. Parent-death
// signals are Linux-only; elsewhere Cluster.Stop must be called.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// setDeathSignal is a no-op outside Linux.
func setDeathSignal(attr *syscall.SysProcAttr, sig syscall.Signal) {}

// SetParentDeathSignal is a no-op outside Linux; it always reports true.
func SetParentDeathSignal(sig syscall.Signal) bool { return true }
