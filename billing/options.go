package billing

import (
	"log/slog"
	"time"
)

// DeliveryOptions tune an Async (NewAsync) and a Spool (OpenSpool): how
// they deliver records to the next sink, and the queue (Async) or disk
// (Spool) in front of it. A zero field takes the default its comment
// gives; a negative one turns the behaviour off where the comment says
// so, and panics at NewAsync or OpenSpool where it cannot be off. Fields
// marked for one of the two are ignored by the other.
type DeliveryOptions struct {
	// Workers is how many records, or batches for an Async over a
	// BatchSink, are delivered to the next sink at once. 0: 4.
	Workers int
	// AttemptTimeout bounds one call to the next sink. 0: 10 s; < 0: no
	// bound.
	AttemptTimeout time.Duration
	// MaxRetries is how many times a failed delivery is tried again
	// before the record is given up (handed to OnDropped and the error
	// log). 0: 5 for an Async; no limit for a Spool, whose records wait on
	// disk, across restarts, until the sink takes them. < 0: no retry.
	MaxRetries int
	// RetryBase is the wait before the first retry; it doubles on each
	// retry up to RetryMax. Each wait is drawn at random between half and
	// all of that, so that workers do not retry in step. 0: 100 ms and
	// 5 s.
	RetryBase, RetryMax time.Duration
	// OnDropped is called with a record given up, and why: its retries
	// ran out, Close gave up on it (Async), or it could neither be stored
	// nor delivered (Spool). Persist it somewhere else or alert. nil: only
	// the log line. A panic in it is recovered and logged.
	OnDropped func(u Usage, err error)
	// Logger gets one error line per dropped record, carrying the whole
	// record as JSON under "record" so that an operator can replay it,
	// and the Spool's warnings (sink failures, torn tails, the disk
	// budget). nil: slog.Default() at the time of the line.
	Logger *slog.Logger

	// QueueSize is how many records wait for a worker (Async). 0: 1024.
	QueueSize int
	// EnqueueTimeout is how long Record waits for room in a full queue
	// before it delivers the record itself, in the caller's goroutine: a
	// slow sink slows the callers down rather than lose records (Async).
	// 0: 1 s; < 0: deliver at once when the queue is full.
	EnqueueTimeout time.Duration
	// MaxBatch is how many records at most one call to a next sink that
	// is a BatchSink stores. An Async's workers take turns to gather a
	// batch: one waits for a first record, then BatchWait or until
	// MaxBatch records are queued, and delivers what is queued with
	// RecordBatch while the next gathers; a batch that still fails after
	// its retries (or panics) is delivered again record by record with
	// Record, so that a record the sink refuses is dropped alone. A
	// Spool's worker delivers each record it takes with those read back
	// and waiting (at most 16 per worker are in flight), without waiting
	// for more; a batch that fails once (or panics) is delivered again
	// record by record, each with its own retries. 0: 128; < 0: no
	// batches, every record goes through Record as with a sink that is no
	// BatchSink.
	MaxBatch int
	// BatchWait is how long a batch waits for more records after its
	// first (Async, with a BatchSink). Records reach the sink after their
	// turn ended, so the wait delays no client; it saves transactions at
	// light load. 0: 5 ms; < 0: no wait, a batch is what is queued when its
	// first record is taken.
	BatchWait time.Duration

	// CommitDelay is how long the first record of a group waits for
	// others before the group is written and synced (Spool). Groups form
	// without it too: the records that arrive while a sync runs share the
	// next one. A delay of a millisecond or two saves syncs (disk IOPS) at
	// moderate load, for that much more latency per Record. 0: no delay.
	CommitDelay time.Duration
	// MaxBytes bounds the bytes of unacknowledged records (Spool). Once
	// they reach it, Record waits up to FullWait for deliveries to make
	// room, then writes the record anyway and logs a warning (at most
	// every 10 s): a spool over budget slows turns down and says so, but
	// never refuses a record. The hard limit is the disk: when a write
	// fails, Record delivers directly (see Spool.Record). Acknowledged
	// records leave the disk with their segment, so the disk holds about
	// MaxBytes plus a few segments. 0: 1 GiB; < 0: no bound.
	MaxBytes int64
	// FullWait bounds the wait for room under MaxBytes (Spool). 0: 1 s;
	// < 0: none.
	FullWait time.Duration

	// commitBytes ends the commit delay as soon as a group holds this many
	// bytes; segmentBytes is the size past which records go to a new
	// segment file (a segment is deleted once all its records are
	// acknowledged). Fixed at 256 KiB and 16 MiB; tests set them.
	commitBytes  int
	segmentBytes int64
}
