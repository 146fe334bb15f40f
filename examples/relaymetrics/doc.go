// Package relaymetrics exports a relay's turns, upstream attempts and
// account health as Prometheus metrics.
//
// New registers the metrics; Metrics.Observer is the relay.Observer to set
// on relay.Handler; Metrics.OnAccountEvent counts the scheduler's account
// events; Metrics.WatchScheduler exports each account's live state (slots,
// cooldown, EWMAs), read from the scheduler at scrape time.
//
// # Series
//
// With the default namespace "responsesrelay":
//
//	turns_started_total{transport}                     counter
//	turns_total{transport,model,status,code_class}     counter
//	turn_duration_seconds{transport,status}            histogram
//	turns_in_flight                                    gauge
//	attempts_total{account,outcome,reason}             counter
//	attempt_duration_seconds{account,outcome}          histogram
//	failovers_total{account,reason}                    counter
//	time_to_first_token_seconds{account,model}         histogram
//	tokens_total{model,kind}                           counter
//	slot_wait_seconds{kind,outcome}                    histogram
//	account_events_total{account,kind}                 counter
//
// and, from WatchScheduler, per account: account_in_flight,
// account_kept_slots, account_limit,
// account_cooling{reason}, account_cooldown_remaining_seconds,
// account_error_rate, account_ttft_seconds, account_consecutive_failures.
//
// status is the turn's usage status (completed, incomplete, failed,
// upstream_error, client_gone) or "error" when no upstream answered;
// code_class is the class of the HTTP status the client got ("2xx", "4xx",
// "5xx"; a client that left before any answer counts as 499, one that left
// mid-stream keeps the 200 it got). outcome and reason are the
// relay.Attempt* and relay.Reason* values (reason is empty for a served
// attempt); kind in slot_wait_seconds is "user" or "account", in
// tokens_total input, cached_input, output or reasoning, in
// account_events_total the scheduler.Event* kind.
//
// # Cardinality
//
// Every label has a bounded set of values. Accounts come from the host's
// pool. Models are named by clients, so only Options.Models (an allowlist)
// or the first Options.MaxModels names seen (64 by default) get a value of
// their own; the rest count as "other", and a turn rejected before its
// model was read as "none". User, API key and request ids are never
// labels: put them in traces (see the relaytrace package) or usage records.
//
// # Cost
//
// The observer funcs update series resolved once per label tuple and kept
// in a map, so a turn costs a few map reads and atomic adds and, once its
// series exist, no allocation. They never block or do I/O.
package relaymetrics
