package billing

// Batches: when the next sink is a BatchSink, a worker delivers the first
// job it takes together with the jobs already waiting (read back while it
// delivered its last), up to MaxBatch, in one RecordBatch call. It does
// not wait for more: unlike an Async's, a spooled record is already
// durable, and the records waiting are the batch.

// batchBuf is a worker's reusable batch.
type batchBuf struct {
	jobs []job
	us   []Usage
}

// deliverWaiting delivers first and the jobs waiting behind it. A batch
// the sink refuses, or panics on, is delivered again job by job, each with
// its own attempts and retries, so that a record the sink keeps refusing
// is retried, or given up, alone.
func (s *Spool) deliverWaiting(first job, b *batchBuf) {
	b.jobs = append(b.jobs[:0], first)
take:
	for len(b.jobs) < s.o.MaxBatch {
		select {
		case j := <-s.jobs:
			b.jobs = append(b.jobs, j)
		default:
			break take
		}
	}
	if len(b.jobs) == 1 {
		s.deliver(first)
		return
	}
	b.us = b.us[:0]
	for _, j := range b.jobs {
		b.us = append(b.us, j.u)
	}
	_, err := attemptBatchOnce(s.runCtx, s.batch, s.o.AttemptTimeout, b.us)
	clear(b.us) // the records are the sink's now; the buffer keeps none alive
	defer clear(b.jobs)
	switch {
	case err == nil:
		for _, j := range b.jobs {
			s.ack(j.seg, j.off, j.size)
			<-s.slots
		}
	case s.runCtx.Err() != nil:
		// Stopped: the records stay in the spool.
	default:
		for _, j := range b.jobs {
			s.deliver(j)
		}
	}
}
