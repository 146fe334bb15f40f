package sqlusage

// Writes counts the transactions the Sink has run (one per batch, plus one
// per record when a failed batch is written again record by record).
func Writes(s *Sink) int64 { return s.writes.Load() }

// OnEnqueue sets a hook called each time a record reaches the batcher.
// Set it before the first Record.
func OnEnqueue(s *Sink, f func()) { s.onEnqueue = f }

// OnWrite sets a hook called before each write with its number of rows,
// in the writer's goroutine: blocking in it holds the writer. Set it
// before the first Record.
func OnWrite(s *Sink, f func(rows int)) { s.onWrite = f }
