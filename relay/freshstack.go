package relay

// onFreshStack runs f on a goroutine of its own and waits for it to
// return, so that f's stack does not grow the caller's. A goroutine's stack
// doubles when a call needs more than it has, and the runtime halves it
// again only while less than a quarter is in use: one deep call made from
// a goroutine that then waits a long time (an idle stream's handler) keeps
// the doubled stack that long. A panic in f is raised again in the caller.
func onFreshStack(f func()) {
	var p any
	panicked := true
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if panicked {
				p = recover()
			}
		}()
		f()
		panicked = false
	}()
	<-done
	if panicked {
		panic(p)
	}
}
