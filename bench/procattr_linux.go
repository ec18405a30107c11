package bench

import "syscall"

// childAttr puts a server process in its own process group (a Ctrl-C at
// the terminal reaches only the benchmark, which then drains the servers
// itself) and has the kernel kill it if the benchmark dies first (no
// orphans even after SIGKILL).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
