package relaytestenv

import (
	"context"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/leakcheck"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

const importPath = "github.com/relaykit/responsesrelay/internal/relaytestenv"

// TestOnlyTestsImportIt: no non-test file of the module or of examples/
// imports this package; the relay tests (HTTP and WebSocket) do.
func TestOnlyTestsImportIt(t *testing.T) {
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	self := filepath.Dir(here)
	users := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == self || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == importPath {
				rel, _ := filepath.Rel(root, path)
				if !strings.HasSuffix(path, "_test.go") {
					t.Errorf("%s imports %s outside a test", rel, importPath)
				}
				users[filepath.ToSlash(rel)] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"relay/env_test.go", "relay/websocket_env_test.go"} {
		if !users[want] {
			t.Errorf("%s does not import %s: the walk missed it (found %v)", want, importPath, users)
		}
	}
}

// fakeTB records failures and cleanups instead of acting on the real test.
type fakeTB struct {
	testing.TB
	errors   []string
	cleanups []func()
}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// end runs the cleanups as testing would, last registered first.
func (f *fakeTB) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func shortPatience(t *testing.T) {
	p := patience
	patience = 50 * time.Millisecond
	t.Cleanup(func() { patience = p })
}

// TestChecksPassAfterATurn: a turn served and finished leaves nothing the
// end-of-test checks report.
func TestChecksPassAfterATurn(t *testing.T) {
	f := &fakeTB{TB: t}
	e := New(f)
	e.AddAccount(&scheduler.Account{ID: "a"})
	e.Mount(e.Relay)
	req, _ := http.NewRequest(http.MethodPost, e.Srv.URL+"/v1/responses", strings.NewReader(`{"model":"gpt-test","input":"hi"}`))
	req.Header.Set("Authorization", "Bearer "+ClientKey)
	resp, err := e.Srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(e.Sink.Records()) != 1 {
		t.Fatalf("status %d, %d usage records", resp.StatusCode, len(e.Sink.Records()))
	}
	e.Srv.Client().CloseIdleConnections()
	f.end()
	if len(f.errors) != 0 {
		t.Fatalf("errors = %q, want none", f.errors)
	}
}

// TestChecksReportHeldSlots: a user slot and an account slot still taken
// when the test ends are reported, with the account named.
func TestChecksReportHeldSlots(t *testing.T) {
	shortPatience(t)
	f := &fakeTB{TB: t}
	e := New(f)
	e.AddAccount(&scheduler.Account{ID: "a"})
	e.AddAccount(&scheduler.Account{ID: "b"})
	releaseUser, err := e.Users.Acquire(context.Background(), "user:u1", 1, concurrency.WaitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer releaseUser()
	sel, err := e.Sched.Select(context.Background(), scheduler.Request{Group: "g", Model: "gpt-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer sel.Release()
	if AccountInFlight(e.Sched, sel.Account.ID) != 1 {
		t.Fatalf("account %s in flight %d", sel.Account.ID, AccountInFlight(e.Sched, sel.Account.ID))
	}
	f.end()
	want := fmt.Sprintf("slots held after the test: user 1, accounts map[%s:1]", sel.Account.ID)
	if len(f.errors) != 1 || f.errors[0] != want {
		t.Fatalf("errors = %q, want [%q]", f.errors, want)
	}
}
