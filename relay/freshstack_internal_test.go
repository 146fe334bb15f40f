package relay

import (
	"errors"
	"testing"
)

// TestOnFreshStackPanics: a panic in f is raised again in the caller.
func TestOnFreshStackPanics(t *testing.T) {
	boom := errors.New("boom")
	defer func() {
		if p := recover(); p != boom {
			t.Fatalf("recovered %v, want the panic's value", p)
		}
	}()
	onFreshStack(func() { panic(boom) })
	t.Fatal("no panic")
}
