//go:build !linux

package main

import (
	"os/exec"
	"time"
)

// setParentDeathSignal does nothing where there is no PR_SET_PDEATHSIG:
// children still end when their stdin closes or relayd gets SIGTERM.
func setParentDeathSignal(*exec.Cmd) {}

// procCPU is not measured here.
func procCPU(int) time.Duration { return 0 }
