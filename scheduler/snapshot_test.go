package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/scheduler"
)

// snapClock is a hand-moved time source.
type snapClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *snapClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *snapClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newSnapScheduler returns a Scheduler over pool with a hand-moved clock.
func newSnapScheduler(pool scheduler.Pool) (*scheduler.Scheduler, *snapClock) {
	c := &snapClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	return &scheduler.Scheduler{Pool: pool, Now: c.Now}, c
}

// stateOf returns the state of id in states, failing the test when absent.
func stateOf(t *testing.T, states []scheduler.AccountState, id string) scheduler.AccountState {
	t.Helper()
	for _, st := range states {
		if st.ID == id {
			return st
		}
	}
	t.Fatalf("account %s not in the snapshot %+v", id, states)
	return scheduler.AccountState{}
}

func ids(states []scheduler.AccountState) []string {
	out := make([]string, len(states))
	for i, st := range states {
		out[i] = st.ID
	}
	return out
}

func selectOne(t *testing.T, s *scheduler.Scheduler, group string) *scheduler.Selection {
	t.Helper()
	sel, err := s.Select(context.Background(), scheduler.Request{Group: group, Model: "gpt-5"})
	if err != nil {
		t.Fatalf("Select: %v", err)
	}
	return sel
}

func threeAccounts() *scheduler.StaticPool {
	pool := scheduler.NewStaticPool()
	pool.Set("g", []*scheduler.Account{
		{ID: "c", Concurrency: -1},
		{ID: "a", Name: "Alpha", Concurrency: 3},
		{ID: "b", Name: "Beta"},
	})
	return pool
}

func TestSnapshotListsAccountsOnceKnown(t *testing.T) {
	s, _ := newSnapScheduler(threeAccounts())
	if got := s.Snapshot(); len(got) != 0 {
		t.Fatalf("fresh scheduler: %+v", got)
	}
	selectOne(t, s, "g").Release()
	got := s.Snapshot()
	if !slices.Equal(ids(got), []string{"a", "b", "c"}) {
		t.Fatalf("after a Select: %v", ids(got))
	}
}

func TestSnapshotGroupListsThroughThePool(t *testing.T) {
	s, _ := newSnapScheduler(threeAccounts())
	got, err := s.SnapshotGroup(context.Background(), "g")
	if err != nil {
		t.Fatal(err)
	}
	want := []scheduler.AccountState{
		{ID: "a", Name: "Alpha", Groups: []string{"g"}, Limit: 3},
		{ID: "b", Name: "Beta", Groups: []string{"g"}},
		{ID: "c", Groups: []string{"g"}}, // a negative Concurrency is unlimited too
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("SnapshotGroup:\n got %+v\nwant %+v", got, want)
	}
	if all := s.Snapshot(); fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("Snapshot after SnapshotGroup: %+v", all)
	}
	if got, err := s.SnapshotGroup(context.Background(), "none"); err != nil || len(got) != 0 {
		t.Fatalf("unknown group: %+v, %v", got, err)
	}
}

func TestSnapshotInFlight(t *testing.T) {
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", Concurrency: 3})
	s, _ := newSnapScheduler(pool)
	inFlight := func() int { return stateOf(t, s.Snapshot(), "a").InFlight }

	s1, s2 := selectOne(t, s, "g"), selectOne(t, s, "g")
	if got := inFlight(); got != 2 {
		t.Fatalf("in flight %d, want 2", got)
	}
	s1.Release()
	s1.Release() // idempotent
	if got := inFlight(); got != 1 {
		t.Fatalf("in flight %d after one release, want 1", got)
	}
	s2.Release()
	if got := inFlight(); got != 0 {
		t.Fatalf("in flight %d after both releases", got)
	}
	if got := stateOf(t, s.Snapshot(), "a").Limit; got != 3 {
		t.Fatalf("limit %d", got)
	}
}

// A 401 whose token the relay could not renew says why in the detail.
func TestSnapshotUnauthorizedDetail(t *testing.T) {
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a"})
	pool.Add("g", &scheduler.Account{ID: "b"})
	s, clock := newSnapScheduler(pool)
	s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: http.StatusUnauthorized,
		Err: errors.New("credential refresh failed: token endpoint answered 400 invalid_grant")})
	s.Observe("b", scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: http.StatusUnauthorized})
	snap := s.Snapshot()
	a, b := stateOf(t, snap, "a"), stateOf(t, snap, "b")
	want := "401: the upstream rejected the credentials; credential refresh failed: token endpoint answered 400 invalid_grant"
	if a.CoolingReason != scheduler.EventUnauthorized || a.CoolingDetail != want ||
		!a.CoolingUntil.Equal(clock.Now().Add(10*time.Minute)) {
		t.Fatalf("a: %v %q %q", a.CoolingUntil, a.CoolingReason, a.CoolingDetail)
	}
	if b.CoolingDetail != "401: the upstream rejected the credentials" {
		t.Fatalf("b: %q", b.CoolingDetail)
	}
}

func TestSnapshotRateLimited(t *testing.T) {
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a"})
	s, clock := newSnapScheduler(pool)
	start := clock.Now()
	s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: http.StatusTooManyRequests,
		Header: http.Header{"Retry-After": {"7"}}})

	st := stateOf(t, s.Snapshot(), "a")
	if !st.CoolingUntil.Equal(start.Add(7*time.Second)) || st.CoolingReason != scheduler.EventRateLimited ||
		!strings.Contains(st.CoolingDetail, "429") {
		t.Fatalf("cooling %v %q %q", st.CoolingUntil, st.CoolingReason, st.CoolingDetail)
	}
	if st.LastStatus != 429 || st.LastOutcome != "status" || !st.LastAt.Equal(start) {
		t.Fatalf("last %d %q %v", st.LastStatus, st.LastOutcome, st.LastAt)
	}
	if st.ConsecutiveFailures != 0 || st.ErrorRate != 0 {
		t.Fatalf("a 429 counted as a failure: %+v", st)
	}

	clock.Advance(7 * time.Second)
	st = stateOf(t, s.Snapshot(), "a")
	if !st.CoolingUntil.IsZero() || st.CoolingReason != "" || st.CoolingDetail != "" {
		t.Fatalf("still cooling after the reset: %+v", st)
	}
	if st.LastStatus != 429 {
		t.Fatalf("last status %d", st.LastStatus)
	}
}

func TestSnapshotSuccess(t *testing.T) {
	s, clock := newSnapScheduler(scheduler.NewStaticPool())
	clock.Advance(time.Second)
	s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: 1500 * time.Millisecond})
	st := stateOf(t, s.Snapshot(), "a")
	if st.LastStatus != 200 || st.LastOutcome != "success" || st.TTFT != 1500*time.Millisecond || !st.LastAt.Equal(clock.Now()) {
		t.Fatalf("after a success: %+v", st)
	}
	if st.Name != "" || st.Groups != nil || st.Limit != 0 {
		t.Fatalf("an account no pool listed has pool facts: %+v", st)
	}
	s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeSuccess, Status: http.StatusCreated})
	if st := stateOf(t, s.Snapshot(), "a"); st.LastStatus != http.StatusCreated {
		t.Fatalf("reported status replaced: %d", st.LastStatus)
	}
}

func TestSnapshotFailuresAndRecover(t *testing.T) {
	s, clock := newSnapScheduler(scheduler.NewStaticPool())
	for range 3 {
		s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeConnError, Err: errors.New("dial tcp: connection refused")})
	}
	st := stateOf(t, s.Snapshot(), "a")
	if st.ConsecutiveFailures != 3 || !(st.ErrorRate > 0 && st.ErrorRate <= 1) {
		t.Fatalf("failures %d, error rate %v", st.ConsecutiveFailures, st.ErrorRate)
	}
	if st.LastStatus != 0 || st.LastOutcome != "connection_error" {
		t.Fatalf("last %d %q", st.LastStatus, st.LastOutcome)
	}
	if st.CoolingReason != scheduler.EventUnhealthy || !strings.Contains(st.CoolingDetail, "connection refused") ||
		!st.CoolingUntil.After(clock.Now()) {
		t.Fatalf("cooling %v %q %q", st.CoolingUntil, st.CoolingReason, st.CoolingDetail)
	}

	// The error rate decays with time, as Select sees it.
	before := st.ErrorRate
	clock.Advance(time.Minute)
	if got := stateOf(t, s.Snapshot(), "a").ErrorRate; got >= before || got < before/2-1e-9 || got > before/2+1e-9 {
		t.Fatalf("error rate %v a minute after %v, want half", got, before)
	}

	s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: http.StatusUnauthorized})
	if st := stateOf(t, s.Snapshot(), "a"); st.CoolingReason != scheduler.EventUnauthorized || st.LastStatus != 401 {
		t.Fatalf("after a 401: %+v", st)
	}
	s.Recover("a")
	st = stateOf(t, s.Snapshot(), "a")
	if !st.CoolingUntil.IsZero() || st.CoolingReason != "" || st.CoolingDetail != "" ||
		st.ConsecutiveFailures != 0 || st.ErrorRate != 0 {
		t.Fatalf("after Recover: %+v", st)
	}
	if st.LastOutcome != "status" || st.LastStatus != 401 {
		t.Fatalf("Recover forgot the last outcome: %+v", st)
	}
}

func TestSnapshotApply(t *testing.T) {
	s, clock := newSnapScheduler(scheduler.NewStaticPool())
	until := clock.Now().Add(time.Minute)
	s.Apply(scheduler.AccountEvent{AccountID: "remote", Kind: scheduler.EventUnauthorized, Until: until,
		Status: 401, Reason: "401 seen by relay-2"})
	st := stateOf(t, s.Snapshot(), "remote")
	if !st.CoolingUntil.Equal(until) || st.CoolingReason != scheduler.EventUnauthorized || st.CoolingDetail != "401 seen by relay-2" {
		t.Fatalf("after Apply: %+v", st)
	}
	if st.LastOutcome != "" || st.LastStatus != 0 || !st.LastAt.IsZero() {
		t.Fatalf("Apply is not an outcome: %+v", st)
	}

	// A local cooldown shorter than the remote one leaves it in place.
	s.Observe("remote", scheduler.Outcome{Kind: scheduler.OutcomeOverloaded, Status: 200})
	if st := stateOf(t, s.Snapshot(), "remote"); st.CoolingReason != scheduler.EventUnauthorized || st.LastOutcome != "overloaded" {
		t.Fatalf("after a shorter local cooldown: %+v", st)
	}

	s.Apply(scheduler.AccountEvent{AccountID: "remote", Kind: scheduler.EventRecovered})
	if st := stateOf(t, s.Snapshot(), "remote"); !st.CoolingUntil.IsZero() || st.CoolingReason != "" || st.CoolingDetail != "" {
		t.Fatalf("after a remote recovered: %+v", st)
	}
}

func TestSnapshotGroups(t *testing.T) {
	pool := scheduler.NewStaticPool()
	pool.Set("g2", []*scheduler.Account{{ID: "a", Name: "in g2", Concurrency: 2}, {ID: "c"}})
	pool.Set("g1", []*scheduler.Account{{ID: "b"}, {ID: "a", Name: "in g1", Concurrency: 1}})
	pool.Set("dup", []*scheduler.Account{{ID: "d"}, {ID: "d"}})
	s, _ := newSnapScheduler(pool)
	for _, g := range []string{"g2", "g1", "dup"} {
		selectOne(t, s, g).Release()
	}

	all := s.Snapshot()
	if !slices.Equal(ids(all), []string{"a", "b", "c", "d"}) {
		t.Fatalf("ids %v", ids(all))
	}
	for id, want := range map[string][]string{"a": {"g1", "g2"}, "b": {"g1"}, "c": {"g2"}, "d": {"dup"}} {
		if got := stateOf(t, all, id).Groups; !slices.Equal(got, want) {
			t.Fatalf("groups of %s: %v, want %v", id, got, want)
		}
	}
	// Snapshot takes the pool facts from the first group by name.
	if a := stateOf(t, all, "a"); a.Name != "in g1" || a.Limit != 1 {
		t.Fatalf("a: %+v", a)
	}

	// SnapshotGroup lists only the group, with the group's own facts.
	g2, err := s.SnapshotGroup(context.Background(), "g2")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(g2), []string{"a", "c"}) {
		t.Fatalf("g2: %v", ids(g2))
	}
	if a := g2[0]; a.Name != "in g2" || a.Limit != 2 || !slices.Equal(a.Groups, []string{"g1", "g2"}) {
		t.Fatalf("a in g2: %+v", a)
	}

	// The group lists do not share elements.
	all[0].Groups[0] = "changed"
	if got := stateOf(t, all, "b").Groups; !slices.Equal(got, []string{"g1"}) {
		t.Fatalf("groups of b changed with a's: %v", got)
	}
}

func TestSnapshotJSON(t *testing.T) {
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", Name: "Alpha", Concurrency: 4})
	s, _ := newSnapScheduler(pool)
	keys := func(st scheduler.AccountState) []string {
		t.Helper()
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}

	fresh, err := s.SnapshotGroup(context.Background(), "g")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"consecutive_failures", "error_rate", "groups", "id", "in_flight", "kept", "last_status", "limit", "name", "ttft_ns"}
	if got := keys(fresh[0]); !slices.Equal(got, want) {
		t.Fatalf("keys of a fresh state %v, want %v (zero times omitted)", got, want)
	}

	s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: time.Second})
	s.Observe("a", scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: 429, Header: http.Header{"Retry-After": {"30"}}})
	st := stateOf(t, s.Snapshot(), "a")
	want = []string{"consecutive_failures", "cooling_detail", "cooling_reason", "cooling_until", "error_rate", "groups",
		"id", "in_flight", "kept", "last_at", "last_outcome", "last_status", "limit", "name", "ttft_ns"}
	if got := keys(st); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	b, _ := json.Marshal(st)
	for _, frag := range []string{`"ttft_ns":1000000000`, `"cooling_reason":"rate_limited"`, `"last_status":429`,
		`"last_outcome":"status"`, `"groups":["g"]`, `"limit":4`} {
		if !strings.Contains(string(b), frag) {
			t.Fatalf("%s lacks %s", b, frag)
		}
	}
	var back scheduler.AccountState
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.CoolingUntil.Equal(st.CoolingUntil) || !back.LastAt.Equal(st.LastAt) || back.CoolingDetail != st.CoolingDetail {
		t.Fatalf("round trip: %+v, want %+v", back, st)
	}
}

func TestSnapshotGroupPoolErrors(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("db down")
	s := &scheduler.Scheduler{Pool: poolFunc(func(context.Context, string) ([]*scheduler.Account, error) { return nil, boom })}
	if _, err := s.SnapshotGroup(ctx, "g"); !errors.Is(err, boom) || !strings.Contains(err.Error(), `"g"`) {
		t.Fatalf("pool error: %v", err)
	}
	s = &scheduler.Scheduler{Pool: poolFunc(func(context.Context, string) ([]*scheduler.Account, error) { panic("nil map") })}
	if _, err := s.SnapshotGroup(ctx, "g"); err == nil || !strings.Contains(err.Error(), "panicked: nil map") {
		t.Fatalf("pool panic: %v", err)
	}
	if _, err := new(scheduler.Scheduler).SnapshotGroup(ctx, "g"); err == nil || !strings.Contains(err.Error(), "Pool") {
		t.Fatalf("nil Pool: %v", err)
	}
}

type poolFunc func(ctx context.Context, group string) ([]*scheduler.Account, error)

func (f poolFunc) Accounts(ctx context.Context, group string) ([]*scheduler.Account, error) {
	return f(ctx, group)
}

func TestOutcomeKindString(t *testing.T) {
	for k, want := range map[scheduler.OutcomeKind]string{
		scheduler.OutcomeSuccess:     "success",
		scheduler.OutcomeStatus:      "status",
		scheduler.OutcomeConnError:   "connection_error",
		scheduler.OutcomeOverloaded:  "overloaded",
		scheduler.OutcomeStreamError: "stream_error",
		scheduler.OutcomeClientError: "client_error",
		scheduler.OutcomeKind(42):    "OutcomeKind(42)",
	} {
		if got := k.String(); got != want {
			t.Errorf("%d: %q, want %q", int(k), got, want)
		}
	}
}

// TestSnapshotConcurrent is for -race: snapshots while turns run, fail and
// recover, and pools change.
func TestSnapshotConcurrent(t *testing.T) {
	pool := scheduler.NewStaticPool()
	pool.Set("g", []*scheduler.Account{{ID: "a", Concurrency: 4}, {ID: "b", Concurrency: 4}, {ID: "c"}})
	pool.Set("h", []*scheduler.Account{{ID: "c"}, {ID: "d", Concurrency: 1}})
	s, clock := newSnapScheduler(pool)
	ctx := context.Background()

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			group := []string{"g", "h"}[w%2]
			for i := range 300 {
				sel, err := s.Select(ctx, scheduler.Request{Group: group, Model: "gpt-5", Wait: false})
				if err != nil {
					continue // busy or all cooling: fine here
				}
				switch i % 7 {
				case 0:
					s.Observe(sel.Account.ID, scheduler.Outcome{Kind: scheduler.OutcomeConnError})
				case 1:
					s.Observe(sel.Account.ID, scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: 429,
						Header: http.Header{"Retry-After-Ms": {"5"}}})
				default:
					s.Observe(sel.Account.ID, scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: time.Millisecond})
				}
				sel.Release()
				clock.Advance(time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			s.Apply(scheduler.AccountEvent{AccountID: "b", Kind: scheduler.EventOverloaded, Until: clock.Now().Add(time.Millisecond), Reason: "remote"})
			if i%10 == 0 {
				s.Recover("b")
				pool.Add("h", &scheduler.Account{ID: fmt.Sprint("e", i)})
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for range 100 {
				for _, st := range s.Snapshot() {
					if st.InFlight < 0 || st.ErrorRate < 0 || st.ErrorRate > 1 {
						t.Errorf("bad state %+v", st)
					}
				}
				if _, err := s.SnapshotGroup(ctx, "h"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()

	for _, st := range s.Snapshot() {
		if st.InFlight != 0 {
			t.Fatalf("%s still has %d in flight", st.ID, st.InFlight)
		}
	}
}

// BenchmarkSnapshot10000 is an operator page over one group of 10 000
// accounts, a tenth of them cooling down.
func BenchmarkSnapshot10000(b *testing.B) {
	const n = 10000
	accts := make([]*scheduler.Account, n)
	for i := range accts {
		accts[i] = &scheduler.Account{ID: fmt.Sprintf("a%05d", i), Name: fmt.Sprintf("account %d", i), Concurrency: 10}
	}
	pool := scheduler.NewStaticPool()
	pool.Set("g", accts)
	s := &scheduler.Scheduler{Pool: pool}
	ctx := context.Background()
	sel, err := s.Select(ctx, scheduler.Request{Group: "g", Model: "gpt-5"})
	if err != nil {
		b.Fatal(err)
	}
	defer sel.Release()
	for i := 0; i < n; i += 10 {
		s.Observe(accts[i].ID, scheduler.Outcome{Kind: scheduler.OutcomeStatus, Status: 429, Header: http.Header{"Retry-After": {"3600"}}})
		s.Observe(accts[i+1].ID, scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: time.Second})
	}
	b.ReportAllocs()
	for b.Loop() {
		if got := s.Snapshot(); len(got) != n {
			b.Fatalf("%d accounts", len(got))
		}
	}
}
