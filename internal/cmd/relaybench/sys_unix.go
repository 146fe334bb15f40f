//go:build unix

package main

import "syscall"

// raiseFDLimit lifts the soft file descriptor limit as far as it can: to
// well above what -idle needs if the process may raise the hard limit (as
// root with CAP_SYS_RESOURCE), else to the hard limit. It returns the soft
// limit in effect.
func raiseFDLimit() (int, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	const want = 1 << 20
	if rl.Max < want {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return want, nil
		}
	}
	var err error
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return int(min(rl.Cur, 1<<30)), err
}
