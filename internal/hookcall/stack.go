package hookcall

// hostStackBytes is how much stack a host call's goroutine takes at its
// start. A client library's call (a Redis or SQL driver's) runs several KiB
// deep: a goroutine that starts small grows deep inside it, and growing
// copies the stack and adjusts every frame on it. Grown at the top, the
// copy is of two frames. The stack is the goroutine's only while the call
// runs.
const hostStackBytes = 12 << 10

// stackIndex keeps the compiler from dropping growStack's array: it is
// only read.
var stackIndex int

// growStack needs a frame of hostStackBytes: the runtime grows the
// caller's stack to fit it before it runs.
//
//go:noinline
func growStack() byte {
	var b [hostStackBytes]byte
	return b[stackIndex]
}
