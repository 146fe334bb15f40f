// Package fastpath links a non-blocking fast path of one library package
// to another without exporting it: the package that has the fast path
// sets a function here in its init, and the caller uses it when set.
package fastpath

// EnqueueUsage, set by package billing, queues a usage record (a
// *billing.Usage, a pointer so that passing it boxes no copy) on sink when sink is a *billing.Async with room in its
// queue, and reports whether it did; it never blocks. Otherwise (another
// sink, a full queue, a closed Async) the caller calls sink.Record as
// host code.
var EnqueueUsage func(sink, usage any) bool
