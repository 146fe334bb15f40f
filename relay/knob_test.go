package relay_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

// TestNegativeKnobs: a knob that cannot be off panics at the first turn,
// naming the field; one that can is off (tested with its behaviour
// elsewhere: MaxAccountSwitches, KeepAlive, DrainTimeout,
// ClientWriteTimeout).
func TestNegativeKnobs(t *testing.T) {
	for field, set := range map[string]func(*relay.Handler){
		"MaxBodyBytes":      func(h *relay.Handler) { h.MaxBodyBytes = -1 },
		"MaxEventBytes":     func(h *relay.Handler) { h.MaxEventBytes = -1 },
		"StreamIdleTimeout": func(h *relay.Handler) { h.StreamIdleTimeout = -time.Second },
		"JSONHeaderTimeout": func(h *relay.Handler) { h.JSONHeaderTimeout = -time.Second },
		"HookTimeout":       func(h *relay.Handler) { h.HookTimeout = -time.Second },
	} {
		h := &relay.Handler{Scheduler: &scheduler.Scheduler{Pool: scheduler.NewStaticPool()}}
		set(h)
		got := func() (p any) {
			defer func() { p = recover() }()
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/responses", strings.NewReader(textReq)))
			return nil
		}()
		if msg := fmt.Sprint(got); !strings.Contains(msg, "relay.Handler."+field+" must not be negative") {
			t.Errorf("negative %s: panic %v", field, got)
		}
	}
}
