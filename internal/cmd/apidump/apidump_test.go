package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// apiFile is the checked-in record of the exported API.
const apiFile = "api/responsesrelay.txt"

// TestAPIUnchanged fails when the exported API differs from the record:
// every change to the public surface must be deliberate and visible in
// review. After such a change: go run ./internal/cmd/apidump > api/responsesrelay.txt
func TestAPIUnchanged(t *testing.T) {
	root := moduleRoot()
	got, err := Dump(root)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, apiFile))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(raw)), "\n")
	gotSet := make(map[string]bool, len(got))
	for _, l := range got {
		gotSet[l] = true
	}
	wantSet := make(map[string]bool, len(want))
	for _, l := range want {
		wantSet[l] = true
	}
	var added, removed []string
	for _, l := range got {
		if !wantSet[l] {
			added = append(added, l)
		}
	}
	for _, l := range want {
		if !gotSet[l] {
			removed = append(removed, l)
		}
	}
	if len(added)+len(removed) > 0 {
		t.Errorf("the exported API differs from %s (regenerate it with go run ./internal/cmd/apidump > %s if the change is deliberate)\nadded:\n  %s\nremoved:\n  %s",
			apiFile, apiFile, strings.Join(added, "\n  "), strings.Join(removed, "\n  "))
	}
}

// TestDumpFindsEveryKind checks the dumper against a small package of its
// own, so a parser change cannot silently drop a kind of identifier.
func TestDumpFindsEveryKind(t *testing.T) {
	dir := t.TempDir()
	src := `package p

import "context"

const C = 1
const c = 2
var V, v int
type S struct {
	A int
	b int
	*E
	context.Context
}
type E struct{}
type I interface {
	M(ctx context.Context, n int) (string, error)
	m()
}
type A = S
type G[T any] []T
type s struct{ X int }
func F(a, b int) error { return nil }
func f() {}
func (S) M() {}
func (*s) M() {}
func (g G[T]) Len() int { return len(g) }
`
	if err := os.MkdirAll(filepath.Join(dir, "p"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p", "p.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Dump(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"pkg p, const C",
		"pkg p, func F(int, int) error",
		"pkg p, method (G[T]) Len() int",
		"pkg p, method (S) M()",
		"pkg p, type A = S",
		"pkg p, type E struct",
		"pkg p, type G[T any] []T",
		"pkg p, type I interface",
		"pkg p, type I interface, M(context.Context, int) (string, error)",
		"pkg p, type S struct",
		"pkg p, type S struct, A int",
		"pkg p, type S struct, embedded *E",
		"pkg p, type S struct, embedded context.Context",
		"pkg p, var V int",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Dump:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	counts := Count(got)
	last := counts[len(counts)-1]
	if last.Pkg != "total" || last.Idents != 10 || last.Members != 4 {
		t.Errorf("Count total = %+v, want 10 identifiers and 4 members", last)
	}
}
