//go:build linux

package kafkaproc

import "syscall"

// childSysProcAttr puts the child in its own process group and asks the
// kernel to SIGKILL it when the thread that started it dies, so a crashed
// parent leaves no JVM behind. The caller must start the child from a
// goroutine locked to its OS thread that lives as long as the child (see
// startProcess): Pdeathsig is tied to the creating thread, not the process.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// setDeathSignal makes the child of attr receive sig when the thread that
// starts it dies.
func setDeathSignal(attr *syscall.SysProcAttr, sig syscall.Signal) {
	attr.Pdeathsig = sig
}

// SetParentDeathSignal asks the kernel to send sig to the calling process
// when its parent dies (prctl PR_SET_PDEATHSIG). kafkactl uses it so that
// killing "go run" also tears down the cluster. It reports whether the
// parent was still alive afterwards.
func SetParentDeathSignal(sig syscall.Signal) bool {
	ppid := syscall.Getppid()
	const prSetPdeathsig = 1
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetPdeathsig, uintptr(sig), 0); errno != 0 {
		return true
	}
	return ppid != 1 && syscall.Getppid() == ppid
}
