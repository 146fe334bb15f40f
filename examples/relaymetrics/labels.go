package relaymetrics

import (
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// children caches the series of one metric by label tuple. A Vec's
// WithLabelValues hashes the values and takes a lock on every call; here a
// hit is one map read under a read lock, with no allocation. The tuples
// are bounded (accounts of the pool, bounded models, relay constants), so
// the map is too.
type children[K comparable, V any] struct {
	mu     sync.RWMutex
	m      map[K]V
	create func(K) V
}

func (c *children[K, V]) get(k K) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.m[k]; ok {
		return v
	}
	if c.m == nil {
		c.m = make(map[K]V)
	}
	v = c.create(k)
	c.m[k] = v
	return v
}

// labelValue makes s usable as a label value: Prometheus rejects (and the
// Vec methods panic on) invalid UTF-8. Called only when a series is made.
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// maxModelLen is the longest model name kept as a label value; longer
// ones are OtherModel (real model names are far shorter).
const maxModelLen = 100

// modelLabels maps client-chosen model names to a bounded set of label
// values: an allowlist, or the first max names seen.
type modelLabels struct {
	allow map[string]bool // nil: first come, first kept
	max   int

	mu    sync.RWMutex
	known map[string]bool // names admitted so far, at most max
	full  atomic.Bool     // no more names are admitted
}

func newModelLabels(allow []string, max int) *modelLabels {
	l := &modelLabels{max: max, known: map[string]bool{}}
	if len(allow) > 0 {
		l.allow = make(map[string]bool, len(allow))
		for _, m := range allow {
			l.allow[m] = true
		}
		return l
	}
	switch {
	case l.max == 0:
		l.max = DefaultMaxModels
	case l.max < 0:
		l.full.Store(true)
	}
	return l
}

// label returns the label value for model.
func (l *modelLabels) label(model string) string {
	if model == "" {
		return NoModel
	}
	if l.allow != nil {
		if l.allow[model] {
			return model
		}
		return OtherModel
	}
	l.mu.RLock()
	ok := l.known[model]
	l.mu.RUnlock()
	if ok {
		return model
	}
	if l.full.Load() || len(model) > maxModelLen || !utf8.ValidString(model) {
		return OtherModel
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.known[model]:
	case len(l.known) >= l.max:
		l.full.Store(true)
		return OtherModel
	default:
		l.known[model] = true
	}
	return model
}

// codeClass is "2xx" for 200..299 and so on; "other" outside 100..599.
func codeClass(code int) string {
	switch code / 100 {
	case 1:
		return "1xx"
	case 2:
		return "2xx"
	case 3:
		return "3xx"
	case 4:
		return "4xx"
	case 5:
		return "5xx"
	}
	return "other"
}
