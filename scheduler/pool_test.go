package scheduler

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestStaticPool(t *testing.T) {
	ctx := context.Background()
	var p StaticPool // the zero value works
	if got, err := p.Accounts(ctx, "g"); len(got) != 0 || err != nil {
		t.Fatalf("empty pool: %v, %v", got, err)
	}
	a, b := acct("a"), acct("b")
	p.Add("g", a)
	p.Add("g", b)
	p.Add("other", acct("x"))
	first, _ := p.Accounts(ctx, "g")
	if len(first) != 2 || first[0] != a || first[1] != b {
		t.Fatalf("accounts %v", first)
	}
	again, _ := p.Accounts(ctx, "g")
	if &again[0] != &first[0] {
		t.Fatal("Accounts copied the slice")
	}

	// Add with a known ID replaces; earlier slices do not change.
	a2 := &Account{ID: "a", Concurrency: 3}
	p.Add("g", a2)
	now, _ := p.Accounts(ctx, "g")
	if len(now) != 2 || now[0] != a2 || first[0] != a {
		t.Fatalf("replace: now %v, earlier %v", now, first)
	}

	if !p.Remove("g", "a") || p.Remove("g", "a") || p.Remove("nope", "a") {
		t.Fatal("Remove reported wrongly")
	}
	if now, _ := p.Accounts(ctx, "g"); len(now) != 1 || now[0] != b {
		t.Fatalf("after remove: %v", now)
	}

	in := []*Account{acct("c"), nil, acct("d")}
	p.Set("g", in)
	in[0] = acct("mutated")
	if now, _ := p.Accounts(ctx, "g"); len(now) != 2 || now[0].ID != "c" || now[1].ID != "d" {
		t.Fatalf("Set kept the caller's slice or the nil: %v", now)
	}
	p.Set("g", nil)
	if now, _ := p.Accounts(ctx, "g"); len(now) != 0 {
		t.Fatalf("Set(nil) left %v", now)
	}
	if x, _ := p.Accounts(ctx, "other"); len(x) != 1 {
		t.Fatal("another group changed")
	}
}

func TestStaticPoolConcurrent(t *testing.T) {
	p := NewStaticPool()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				p.Add("g", &Account{ID: string(rune('a' + w)), Weight: i})
			}
		})
		wg.Go(func() {
			for range 200 {
				accts, _ := p.Accounts(context.Background(), "g")
				for _, a := range accts {
					if a == nil {
						t.Error("nil account")
					}
				}
			}
		})
	}
	wg.Wait()
	if accts, _ := p.Accounts(context.Background(), "g"); len(accts) != 4 {
		t.Fatalf("%d accounts, want one per ID", len(accts))
	}
}

func TestStaticKeys(t *testing.T) {
	keys := StaticKeys{"a": "sk-secret-a", "empty": ""}
	if tok, err := keys.Token(context.Background(), acct("a")); err != nil || tok != "sk-secret-a" {
		t.Fatalf("got %q, %v", tok, err)
	}
	for _, id := range []string{"b", "empty"} {
		_, err := keys.Token(context.Background(), acct(id))
		if !errors.Is(err, errNoCredentials) || !strings.Contains(err.Error(), `"`+id+`"`) || strings.Contains(err.Error(), "sk-") {
			t.Fatalf("%s: err %v", id, err)
		}
	}
	if _, err := keys.Token(context.Background(), nil); !errors.Is(err, errNoCredentials) {
		t.Fatalf("nil account: %v", err)
	}
	var _ Credentials = keys
	var _ Credentials = CredentialsFunc(keys.Token)
}

// Reloading a configuration with Set keeps the pointers (and so the
// Scheduler's cached facts) of accounts that did not change.
func TestStaticPoolSetKeepsUnchangedAccounts(t *testing.T) {
	ctx := context.Background()
	var p StaticPool
	mk := func(id string, weight int) *Account {
		return &Account{ID: id, BaseURL: "http://u/" + id, Weight: weight, Models: []string{"gpt-*"}, Header: map[string][]string{"X-A": {id}}}
	}
	p.Set("g", []*Account{mk("a", 1), mk("b", 1)})
	before, _ := p.Accounts(ctx, "g")

	p.Set("g", []*Account{mk("a", 1), mk("b", 1)}) // equal values, new pointers
	same, _ := p.Accounts(ctx, "g")
	if &same[0] != &before[0] || same[0] != before[0] || same[1] != before[1] {
		t.Fatal("an unchanged reload replaced the accounts or the slice")
	}

	p.Set("g", []*Account{mk("b", 1), mk("a", 2), mk("c", 1)}) // a changed, c is new, order changed
	after, _ := p.Accounts(ctx, "g")
	if len(after) != 3 || after[0] != before[1] {
		t.Fatalf("unchanged b lost its pointer: %v", after)
	}
	if after[1] == before[0] || after[1].Weight != 2 {
		t.Fatal("changed account a kept its old value")
	}
	if after[2].ID != "c" {
		t.Fatalf("new account missing: %v", after)
	}
}
