// Package pump moves one turn's events from an upstream to a client,
// independent of either transport.
//
// The pump classifies each event once, holds the bootstrap events
// (response.created, response.in_progress) back while the relay may still
// fail over (bounded: see held.go), detects the in-band refusal (a failed or error event before any
// output), keeps the client alive while the upstream is silent, aborts an
// idle upstream, ends a broken stream with exactly one response.failed, and
// after the client has gone keeps reading to learn the usage.
package pump

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Source yields the JSON of each upstream event. The slice is valid until
// the next call. At a clean end it returns io.EOF.
type Source interface {
	Next() ([]byte, error)
}

// Sink is the client end. Send writes and flushes one event; typ is its
// type. Ping writes a keepalive and may be called concurrently with Send.
// An error from either means the client is gone.
type Sink interface {
	Send(typ string, data []byte) error
	Ping() error
}

// BatchSink is a Sink that can write an event without flushing it. The
// pump uses it while the Source has another event ready, so a burst of
// events reaches the client in one write instead of one each; it flushes
// before the Source could block, and at the end.
type BatchSink interface {
	Sink
	SendBuffered(typ string, data []byte) error
	Flush() error
}

// PendingSource is a Source that can tell whether Next would return an
// event without waiting for the upstream.
type PendingSource interface {
	Source
	Pending() bool
}

// ClassifiedSource is a Source that knows the classification of the
// events it made itself (a translation's), so the pump takes it instead
// of reading each event's JSON again. The pump trusts such an event to be
// one well-formed JSON object within jsonx.MaxDepth: a source classifies
// only events it wrote, never bytes it relays.
type ClassifiedSource interface {
	Source
	// NextClassified is Next with the event's classification; an Info
	// with an empty Type leaves the event to the pump to classify.
	NextClassified() ([]byte, event.Info, error)
}

// Options configure one pump run.
type Options struct {
	// HoldBootstrap keeps bootstrap events back until the first output or
	// terminal event, so that an in-band refusal can still fail over.
	HoldBootstrap bool
	// MaxHeldEvents and MaxHeldBytes bound the bootstrap events held; an
	// upstream that sends more before any output ends the run as refused
	// with ErrTooManyHeld. 0: DefaultMaxHeldEvents, DefaultMaxHeldBytes.
	MaxHeldEvents, MaxHeldBytes int

	KeepAlive    time.Duration // ping the client after this much silence; 0: never
	IdleTimeout  time.Duration // abort the upstream after this much silence; 0: never
	DrainTimeout time.Duration // after the client is gone, read at most this long; 0: stop at once
	// Abort closes the upstream (cancels its request or connection); Next
	// must then return an error. Required when IdleTimeout or DrainTimeout
	// is set.
	Abort func()
	// RequestedModel and UpstreamModel: when they differ, response.model is
	// rewritten back to the requested name.
	RequestedModel, UpstreamModel string
	Now                           func() time.Time // nil: time.Now
	// Sanitize, when set, rewrites error and response.failed events before
	// they are forwarded (they may echo a credential).
	Sanitize func([]byte) []byte
	// BeforeTerminal, when set, is called once, on the pump's goroutine,
	// with the terminal event's type, response id and JSON (valid during
	// the call) before that event is forwarded: what must hold when the
	// client learns the turn ended (a sticky binding, a conversation
	// record its next turn needs) is done by then.
	BeforeTerminal func(typ, responseID string, data []byte)
	// FirstOutput, when set, is called once, on the pump's goroutine, with
	// the response id seen so far ("" when none yet) when the first output
	// event arrives, before anything held is forwarded: from then on the
	// run can no longer be refused, so the turn has its account.
	FirstOutput func(responseID string)
	// OutputItem, when set, is called on the pump's goroutine with the
	// item of every response.output_item.done event (valid during the
	// call), before the event is forwarded.
	OutputItem func(item []byte)
}

// End is how a pump run ended.
type End int

const (
	EndTerminal   End = iota // a terminal event was forwarded (or drained)
	EndRefused               // failed before any output; nothing was forwarded: may fail over
	EndBroken                // the upstream broke after output; one response.failed was appended
	EndClientGone            // the client left; the upstream was drained as far as it went
)

// Result is what the relay needs after a run.
type Result struct {
	End End
	// Response is the terminal event's response object (zero when none).
	Response event.Response
	// ResponseID is the id seen on any event (created, terminal).
	ResponseID string
	// Forwarded counts events written to the client (pings excluded).
	Forwarded int
	// Started reports that at least one event reached the client.
	Started bool
	// FirstOutput is when the first output event arrived; zero if none.
	FirstOutput time.Time
	// Refusal is the refusing event's JSON (EndRefused with an event), so
	// the caller can map its error code; nil when the stream broke first.
	Refusal []byte
	// Err is the upstream error behind EndRefused without an event,
	// EndBroken, or a drain that did not reach a terminal event.
	Err error
	// IdleTimeout reports that the upstream was aborted for silence.
	IdleTimeout bool
	// TerminalType is the type of the terminal event forwarded, if any.
	TerminalType string
}

// ErrIdle is Result.Err after an idle abort.
var ErrIdle = errors.New("upstream idle timeout")

// ErrMalformedEvent is Result.Err when the upstream sent an event that is
// not a JSON object with a type, or one nested deeper than jsonx.MaxDepth
// (a client's recursive parser could not take it); it is never forwarded.
var ErrMalformedEvent = errors.New("upstream sent a malformed event")

// Runner is one pump run, made by New and started by its Run method.
type Runner struct {
	o    Options
	sink Sink
	now  func() time.Time

	idle      atomic.Bool
	finished  atomic.Bool // Run returned: timers must not re-arm
	gone      atomic.Bool
	drainOnce sync.Once
	keepalive atomic.Pointer[time.Timer] // read by the timer's own callback
	idleTimer atomic.Pointer[time.Timer]
	// The timers are not moved on every event (two timer updates per event
	// cost more than the rest of the pump's work): each event stores the
	// time since base, and a timer that fires early re-arms itself for the
	// time left.
	base     time.Time
	tick     int64        // time of the current event, since base
	lastRead atomic.Int64 // since base
	lastSend atomic.Int64 // since base
	drain    *time.Timer
	mu       sync.Mutex // guards drain
	// Bootstrap events held back: their bytes end to end in heldBuf, each
	// ending at heldEnds[i]. The arrays cover the usual two without
	// allocating.
	heldBuf   []byte
	heldEnds  []int
	heldTypes []string
	endsArr   [4]int
	typesArr  [4]string

	client     context.Context
	classified ClassifiedSource // set when the source classifies its events
	batch      BatchSink        // set with pending when both ends can batch
	pending    PendingSource
	unflushed  bool // an event was written without a flush
	lastSeq    int64
	res        Result
}

// Run pumps events from src to sink until a terminal event, the end of the
// upstream, or (after the client left) the drain limit. client is the
// client's context: when it is done the client is gone and the pump drains.
func Run(client context.Context, src Source, sink Sink, o Options) Result {
	return *New(o).Run(client, src, sink)
}

// New prepares a run with o. With New and Runner.Run a caller need not
// keep the Options (and the Result) in its own frame while the run waits
// for its source: the frames a silent stream's goroutine is parked in
// decide its stack size (see relay's relayEvents).
func New(o Options) *Runner {
	p := &Runner{o: o, now: o.Now, lastSeq: -1}
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// Run is the package's Run with the Options given to New; the Result
// lives in the Runner. A Runner runs once.
func (p *Runner) Run(client context.Context, src Source, sink Sink) *Result {
	p.sink, p.client = sink, client
	o := &p.o
	p.base = time.Now()
	if o.KeepAlive > 0 {
		ka := time.AfterFunc(time.Hour, p.ping)
		p.keepalive.Store(ka)
		ka.Reset(o.KeepAlive)
		defer func() { p.finished.Store(true); ka.Stop() }()
	}
	if o.IdleTimeout > 0 {
		it := time.AfterFunc(time.Hour, p.idleCheck)
		p.idleTimer.Store(it)
		it.Reset(o.IdleTimeout)
		defer it.Stop()
	}
	stop := context.AfterFunc(client, p.clientGone)
	defer stop()
	defer func() {
		p.mu.Lock()
		if p.drain != nil {
			p.drain.Stop()
		}
		p.mu.Unlock()
	}()
	p.classified, _ = src.(ClassifiedSource)
	if b, ok := sink.(BatchSink); ok {
		if ps, ok := src.(PendingSource); ok {
			p.batch, p.pending = b, ps
		}
	}
	p.run(src)
	if p.unflushed && !p.gone.Load() {
		if err := p.batch.Flush(); err != nil {
			p.clientGone()
		}
	}
	return &p.res
}

// run is the loop, kept to a small frame: the goroutine of an idle stream
// waits in next, under it, and each event is handled in a frame of its
// own that is gone by the next wait.
func (p *Runner) run(src Source) {
	for {
		data, info, err := p.next(src)
		if err != nil {
			p.upstreamEnded(err)
			return
		}
		if p.handle(data, info) {
			return
		}
	}
}

// next waits for the source's next event.
//
//go:noinline
func (p *Runner) next(src Source) (data []byte, info event.Info, err error) {
	if p.classified != nil {
		data, info, err = p.classified.NextClassified()
	} else {
		data, err = src.Next()
	}
	if err == nil && (p.o.IdleTimeout > 0 || p.o.KeepAlive > 0) {
		p.tick = int64(time.Since(p.base))
		p.lastRead.Store(p.tick)
	}
	return data, info, err
}

// handle classifies and forwards one event; true ends the run.
//
//go:noinline
func (p *Runner) handle(data []byte, info event.Info) (done bool) {
	if info.Type == "" {
		if blank(data) {
			return false // an empty data line is a keepalive, not an event
		}
		info = event.Classify(data)
		if !wellFormed(data, info) || jsonx.DepthExceeds(data, jsonx.MaxDepth) {
			p.upstreamEnded(ErrMalformedEvent)
			return true
		}
	}
	if info.Seq >= 0 {
		p.lastSeq = info.Seq
	}
	switch info.Kind {
	case event.KindBootstrap:
		if p.res.ResponseID == "" {
			p.res.ResponseID = gjson.GetBytes(data, "response.id").String()
		}
		data = p.rewriteModel(data)
		if p.o.HoldBootstrap && !p.res.Started {
			if !p.hold(info.Type, data) {
				p.upstreamEnded(ErrTooManyHeld)
				return true
			}
			return false
		}
		p.send(info.Type, data)
	case event.KindOutput:
		if p.res.FirstOutput.IsZero() {
			p.res.FirstOutput = p.now()
			if p.o.FirstOutput != nil {
				p.o.FirstOutput(p.res.ResponseID)
			}
		}
		if p.o.OutputItem != nil && info.Type == event.TypeOutputItemDone {
			if item := gjson.GetBytes(data, "item"); item.IsObject() {
				p.o.OutputItem(event.Raw(data, item))
			}
		}
		p.flushHeld()
		p.send(info.Type, data)
	case event.KindError:
		if !p.res.Started && p.o.HoldBootstrap {
			p.refuse(data)
			return true
		}
		p.flushHeld()
		p.send(info.Type, p.sanitize(data))
	case event.KindTerminal:
		resp := event.ParseEventResponse(data)
		if info.Type == event.TypeFailed && !p.res.Started && p.o.HoldBootstrap && resp.Usage.Output == 0 {
			p.res.Response = resp
			p.refuse(data)
			return true
		}
		p.res.Response = resp
		if resp.ID != "" {
			p.res.ResponseID = resp.ID
		}
		p.res.TerminalType = info.Type
		if info.Type == event.TypeFailed {
			data = p.sanitize(data)
		}
		if p.o.BeforeTerminal != nil {
			p.o.BeforeTerminal(info.Type, p.res.ResponseID, data)
		}
		p.flushHeld()
		// Delivered means the turn ended normally for the client, even
		// if it hangs up right after reading it.
		p.res.End = EndClientGone
		// Flushed at once: delivered means it reached the client.
		if p.write(info.Type, p.rewriteModel(data), false) {
			p.res.End = EndTerminal
		}
		return true
	}
	return false
}

func (p *Runner) refuse(data []byte) {
	p.res.End = EndRefused
	p.res.Refusal = append([]byte(nil), data...)
}

// upstreamEnded handles EOF, reset, idle abort or drain abort before a
// terminal event.
func (p *Runner) upstreamEnded(err error) {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // a stream must end with a terminal event
	}
	if p.idle.Load() {
		p.res.IdleTimeout = true
		err = ErrIdle
	}
	p.res.Err = err
	// The client's context is asked too: the caller may cut the upstream
	// on the client's departure before this pump's own watch has run.
	if p.gone.Load() || p.client.Err() != nil {
		p.gone.Store(true)
		p.res.End = EndClientGone
		return
	}
	if !p.res.Started && p.o.HoldBootstrap {
		p.res.End = EndRefused
		return
	}
	p.flushHeld()
	code, msg := "upstream_error", "The upstream connection ended before the response completed."
	if p.res.IdleTimeout {
		code, msg = "stream_timeout", "The upstream stopped sending events before the response completed."
	}
	p.res.End = EndClientGone
	if p.send(event.TypeFailed, p.failedEvent(code, msg)) {
		p.res.End = EndBroken
	}
}

// failedEvent builds the response.failed that ends a broken stream, with
// the sequence number continuing the upstream's.
func (p *Runner) failedEvent(code, msg string) []byte {
	b := []byte(`{"type":"response.failed","sequence_number":`)
	b = strconv.AppendInt(b, p.lastSeq+1, 10)
	b = append(b, `,"response":{"id":`...)
	b = jsonx.AppendString(b, p.res.ResponseID)
	b = append(b, `,"object":"response","created_at":`...)
	b = strconv.AppendInt(b, p.now().Unix(), 10)
	b = append(b, `,"status":"failed","error":{"code":`...)
	b = jsonx.AppendString(b, code)
	b = append(b, `,"message":`...)
	b = jsonx.AppendString(b, msg)
	b = append(b, `},"incomplete_details":null,"model":`...)
	b = jsonx.AppendString(b, p.o.RequestedModel)
	b = append(b, `,"output":[],"usage":null}}`...)
	return b
}

// send forwards one event and reports whether the client took it.
// send writes one event, flushed unless the source has another one ready.
func (p *Runner) send(typ string, data []byte) bool {
	return p.write(typ, data, p.batch != nil && p.pending.Pending())
}

// write writes one event; buffered leaves it unflushed (batching sinks).
func (p *Runner) write(typ string, data []byte, buffered bool) bool {
	if p.gone.Load() {
		return false
	}
	var err error
	if buffered {
		err, p.unflushed = p.batch.SendBuffered(typ, data), true
	} else {
		err, p.unflushed = p.sink.Send(typ, data), false
	}
	if err != nil {
		p.clientGone()
		return false
	}
	p.res.Forwarded++
	p.res.Started = true
	if p.o.KeepAlive > 0 {
		p.lastSend.Store(p.tick)
	}
	return true
}

func (p *Runner) sanitize(data []byte) []byte {
	if p.o.Sanitize == nil {
		return data
	}
	return p.o.Sanitize(data)
}

// wellFormed is a cheap check that data is one JSON object with a type:
// braces at both ends and a type found. A full validation would cost a
// second pass over every event; a cut or foreign line fails this one.
func wellFormed(data []byte, info event.Info) bool {
	if info.Type == "" {
		return false
	}
	i, j := 0, len(data)-1
	for i < j && isSpace(data[i]) {
		i++
	}
	for j > i && isSpace(data[j]) {
		j--
	}
	return data[i] == '{' && data[j] == '}'
}

func blank(data []byte) bool {
	for _, c := range data {
		if !isSpace(c) {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// idleCheck runs when the idle timer fires: the upstream was silent for
// IdleTimeout unless an event came since the timer was set.
func (p *Runner) idleCheck() {
	since := time.Duration(int64(time.Since(p.base)) - p.lastRead.Load())
	if left := p.o.IdleTimeout - since; left > 0 {
		p.idleTimer.Load().Reset(left)
		return
	}
	p.idle.Store(true)
	p.o.Abort()
}

func (p *Runner) ping() {
	if p.gone.Load() || p.finished.Load() {
		return
	}
	since := time.Duration(int64(time.Since(p.base)) - p.lastSend.Load())
	if left := p.o.KeepAlive - since; left > 0 {
		p.keepalive.Load().Reset(left) // an event went out meanwhile
		return
	}
	if err := p.sink.Ping(); err != nil {
		p.clientGone()
		return
	}
	if !p.finished.Load() {
		p.keepalive.Load().Reset(p.o.KeepAlive)
	}
}

// clientGone switches to draining: nothing more is written, and the
// upstream is read for at most DrainTimeout to learn the usage.
func (p *Runner) clientGone() {
	p.drainOnce.Do(func() {
		p.gone.Store(true)
		if p.o.DrainTimeout <= 0 || p.o.Abort == nil {
			if p.o.Abort != nil {
				p.o.Abort()
			}
			return
		}
		p.mu.Lock()
		p.drain = time.AfterFunc(p.o.DrainTimeout, p.o.Abort)
		p.mu.Unlock()
	})
}

func (p *Runner) rewriteModel(data []byte) []byte {
	if p.o.UpstreamModel == "" || p.o.UpstreamModel == p.o.RequestedModel {
		return data
	}
	if gjson.GetBytes(data, "response.model").String() != p.o.UpstreamModel {
		return data
	}
	out, err := sjson.SetBytes(data, "response.model", p.o.RequestedModel)
	if err != nil {
		return data
	}
	return out
}
