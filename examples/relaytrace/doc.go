// Package relaytrace traces a relay's turns with OpenTelemetry.
//
// New returns a relay.Observer; set it as relay.Handler.Observer. Each
// turn becomes a span named "responses.turn" (kind server, or internal
// under a span the host already started for the request, e.g. with
// otelhttp), carried by the turn's context so that the host's hooks see it.
// Each upstream attempt becomes a child span "responses.attempt" (kind
// client) timed from the attempt's start to its end, so a failover shows
// as two children: the failed attempt, with an error status and its
// reason, and the one that served. The turn span gets one event
// "slot_wait" per wait for a user slot or an account; at its end the
// model, status, HTTP status, attempts, account and token counts (the
// Attr* keys) and, when output arrived, an event "first_token" timed at
// the first output (the relay reports the time to first token, to the
// millisecond, as the turn ends). A turn answered with an error, a 5xx,
// or a response that failed or broke ends with an error status; a client
// that left does not.
//
// User and API key ids are recorded only with Options.RecordSubject.
// Request ids and models are: they are what one looks a trace up by, and
// a tracing backend, unlike a metrics one, handles one value per span.
//
// The relay creates the attempt spans after the attempts end, so they are
// not propagated to the upstream; to continue a client's trace, wrap the
// handler with a propagating middleware (otelhttp.NewHandler) and the turn
// span becomes a child of its span.
package relaytrace
