package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/scheduler"
)

// DefaultEventBuffer is how many account events wait for publishing before
// Publish drops them.
const DefaultEventBuffer = 256

// EventsOptions configure Events. A nil *EventsOptions and zero fields take
// the defaults.
type EventsOptions struct {
	// Prefix starts the channel name, Prefix+"account-events". "":
	// DefaultPrefix ("relay:").
	Prefix string
	// Instance names this relay instance in its messages, so that Run
	// skips its own. "": a random id.
	Instance string
	// Buffer is how many events may wait for publishing. 0:
	// DefaultEventBuffer.
	Buffer int
	// Timeout bounds each PUBLISH, and Close's wait for the buffer to
	// drain, on a client with ContextTimeoutEnabled (see NewClient). 0:
	// DefaultTimeout (2 s).
	Timeout time.Duration
	// Logger receives dropped and unpublishable events and bad messages.
	// nil: slog.Default().
	Logger *slog.Logger
}

// Events shares account health between relay instances over a Redis
// pub/sub channel: a 429 seen by one instance benches the account on all.
//
// Publish goes into Scheduler.OnAccountEvent; Run, on its own goroutine,
// hands the events of the other instances to Scheduler.Apply. Pub/sub does
// not store messages: an instance that starts, or reconnects, after an
// event does not get it, which for cooldowns measured in seconds to
// minutes costs at most one more 429 on that instance.
type Events struct {
	c        redis.UniversalClient
	channel  string
	instance string
	timeout  time.Duration
	log      *slog.Logger

	queue chan queued
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type queued struct {
	e  scheduler.AccountEvent
	at time.Time
}

// message is the JSON on the channel. For is the cooldown left when it was
// published, so the hosts' clocks need not agree.
type message struct {
	Instance string `json:"instance"`
	Account  string `json:"account"`
	Kind     string `json:"kind"`
	ForMS    int64  `json:"for_ms,omitempty"`
	Status   int    `json:"status,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// NewEvents returns Events over client and starts its publisher goroutine;
// Close stops it. The client stays the caller's to close, after Events.
func NewEvents(client redis.UniversalClient, o *EventsOptions) *Events {
	if o == nil {
		o = &EventsOptions{}
	}
	e := &Events{
		c:        client,
		channel:  o.Prefix,
		instance: o.Instance,
		timeout:  o.Timeout,
		log:      o.Logger,
		done:     make(chan struct{}),
	}
	if e.channel == "" {
		e.channel = DefaultPrefix
	}
	e.channel += "account-events"
	if e.instance == "" {
		e.instance = randomID()
	}
	if e.timeout <= 0 {
		e.timeout = DefaultTimeout
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	size := o.Buffer
	if size <= 0 {
		size = DefaultEventBuffer
	}
	e.queue = make(chan queued, size)
	e.wg.Add(1)
	go e.publisher()
	return e
}

// Instance is the id this instance's messages carry.
func (e *Events) Instance() string { return e.instance }

// Publish queues e for the other instances and returns at once, so it can
// be Scheduler.OnAccountEvent itself or be called from it. When the buffer
// is full (Redis slow or down) the event is dropped and logged: it is a
// hint, and each instance still benches the account on its own 429s.
func (e *Events) Publish(_ context.Context, ev scheduler.AccountEvent) {
	select {
	case <-e.done:
		return
	default:
	}
	select {
	case e.queue <- queued{e: ev, at: time.Now()}:
	default:
		e.log.Warn("redisstore: account event buffer full; event not shared with other instances",
			"account", ev.AccountID, "kind", ev.Kind, "until", ev.Until)
	}
}

func (e *Events) publisher() {
	defer e.wg.Done()
	for {
		select {
		case q := <-e.queue:
			ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
			e.send(ctx, q)
			cancel()
		case <-e.done:
			// Drain what was queued before Close, within one Timeout.
			ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
			defer cancel()
			for {
				select {
				case q := <-e.queue:
					e.send(ctx, q)
				default:
					return
				}
			}
		}
	}
}

func (e *Events) send(ctx context.Context, q queued) {
	m := message{Instance: e.instance, Account: q.e.AccountID, Kind: q.e.Kind, Status: q.e.Status, Reason: q.e.Reason}
	if !q.e.Until.IsZero() {
		// Measured from when the event happened: time spent in the queue
		// is part of the cooldown.
		m.ForMS = q.e.Until.Sub(q.at).Milliseconds()
		if m.ForMS <= 0 && q.e.Kind != scheduler.EventRecovered {
			return // over already
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	if err := e.c.Publish(ctx, e.channel, b).Err(); err != nil {
		e.log.Warn("redisstore: publishing an account event failed; not shared with other instances",
			"account", q.e.AccountID, "kind", q.e.Kind, "error", err)
	}
}

// Run subscribes to the other instances' events and applies each to sched
// with Scheduler.Apply, until ctx ends or Events is closed; then it returns
// nil (ErrClosed when called after Close). go-redis reconnects and
// resubscribes by itself after a Redis outage. Run one per Scheduler.
func (e *Events) Run(ctx context.Context, sched *scheduler.Scheduler) error {
	if sched == nil {
		return errors.New("redisstore: Events.Run needs a Scheduler")
	}
	select {
	case <-e.done:
		return ErrClosed
	default:
	}
	ps := e.c.Subscribe(ctx, e.channel)
	defer ps.Close()
	msgs := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.done:
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			e.apply(sched, m.Payload)
		}
	}
}

func (e *Events) apply(sched *scheduler.Scheduler, payload string) {
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.Account == "" || m.Kind == "" {
		e.log.Warn("redisstore: ignoring a malformed account event", "channel", e.channel, "error", err)
		return
	}
	if m.Instance == e.instance {
		return
	}
	ev := scheduler.AccountEvent{AccountID: m.Account, Kind: m.Kind, Status: m.Status, Reason: m.Reason}
	if m.Kind != scheduler.EventRecovered {
		if m.ForMS <= 0 {
			return
		}
		ev.Until = time.Now().Add(time.Duration(m.ForMS) * time.Millisecond)
	}
	sched.Apply(ev)
}

// Close stops publishing after sending what is queued (within Timeout) and
// makes Run return. Events published after Close are dropped.
func (e *Events) Close() error {
	e.once.Do(func() { close(e.done) })
	e.wg.Wait()
	return nil
}
