package relay

import "context"

// Subject is the authenticated caller of a turn: who pays, which key, which
// group of accounts serves it, and how many turns it may run at once.
type Subject struct {
	UserID   string
	APIKeyID string // namespaces sticky sessions; never the key itself
	GroupID  string // the scheduler group; "" is the group named ""
	// Concurrency is how many turns the user may have in flight; <= 0 is
	// unlimited.
	Concurrency int
	// Meta is the host's own value, handed to the billing gate.
	Meta any
}

type subjectKey struct{}

// WithSubject returns a context carrying s, for hosts that authenticate in
// their own middleware before the Handler.
func WithSubject(ctx context.Context, s *Subject) context.Context {
	return context.WithValue(ctx, subjectKey{}, s)
}

// SubjectFrom returns the subject stored by WithSubject.
func SubjectFrom(ctx context.Context) (*Subject, bool) {
	s, ok := ctx.Value(subjectKey{}).(*Subject)
	return s, ok && s != nil
}
