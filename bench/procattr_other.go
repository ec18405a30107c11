//go:build !linux

package bench

import "syscall"

// childAttr puts a server process in its own process group (a Ctrl-C at
// the terminal reaches only the benchmark, which then drains the servers
// itself).
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
