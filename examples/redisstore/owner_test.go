package redisstore_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// TestTwoRelaysRefuseAnotherKeysResponse: a response created by key A
// through one instance is refused to key B through the other (400
// previous_response_not_found, nothing upstream), and chains for A; the
// binding in Redis records the owner and lives for the owner TTL.
func TestTwoRelaysRefuseAnotherKeysResponse(t *testing.T) {
	cl := newCluster(t, 2, nil, &scheduler.Account{ID: "a"}, &scheduler.Account{ID: "b"}, &scheduler.Account{ID: "c"})
	one, two := cl.nodes[0], cl.nodes[1]
	r := cl.postAs(one, "kA", `{"model":"gpt-test","input":"start"}`)
	if r.status != http.StatusOK {
		t.Fatalf("A creates: status %d: %s", r.status, r.body)
	}
	prev := gjson.Get(r.body, "id").String()
	holder := cl.up.Requests()[0].Account

	key := cl.prefix + "sticky:resp:" + prev
	ctx := context.Background()
	v, err := one.client.Get(ctx, key).Result()
	if err != nil || !strings.HasPrefix(v, "o1:") || !strings.HasSuffix(v, ":2:kA"+holder) {
		t.Fatalf("binding in Redis: %q, %v", v, err)
	}
	const ownerTTL = 30 * 24 * time.Hour // the Scheduler's default OwnerTTL
	if ttl, err := one.client.PTTL(ctx, key).Result(); err != nil || ttl < ownerTTL-time.Minute {
		t.Fatalf("binding TTL %s, %v; want the owner TTL %s", ttl, err, ownerTTL)
	}

	want := `{"error":{"message":"Previous response with id '` + prev + `' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}`
	before := len(cl.up.Requests())
	for _, in := range []*instance{two, one} {
		r = cl.postAs(in, "kB", `{"model":"gpt-test","input":"more","previous_response_id":"`+prev+`"}`)
		if r.status != http.StatusBadRequest || r.body != want {
			t.Fatalf("B chains A's response: status %d: %s\nwant 400 %s", r.status, r.body, want)
		}
	}
	if n := len(cl.up.Requests()); n != before {
		t.Fatalf("%d requests went upstream for B's refused turns", n-before)
	}

	r = cl.postAs(two, "kA", `{"model":"gpt-test","input":"more","previous_response_id":"`+prev+`"}`)
	if r.status != http.StatusOK {
		t.Fatalf("A chains through the other instance: status %d: %s", r.status, r.body)
	}
	reqs := cl.up.Requests()
	if q := reqs[len(reqs)-1]; q.Account != holder {
		t.Fatalf("A's chain went to %s, the response is on %s", q.Account, holder)
	}
	if mem, err := one.client.MemoryUsage(ctx, key).Result(); err == nil {
		t.Logf("Redis memory of one response binding: %d bytes (key %d, value %d bytes)", mem, len(key), len(v))
	}
}

// TestTwoRelaysMoveAConversation: a chain made through one instance on
// account a moves, through the other instance, to b once a cools down:
// the records in Redis are the other instance's too.
func TestTwoRelaysMoveAConversation(t *testing.T) {
	cl := newCluster(t, 2, nil, &scheduler.Account{ID: "a", Priority: 0}, &scheduler.Account{ID: "b", Priority: 1})
	one, two := cl.nodes[0], cl.nodes[1]
	prev := ""
	for _, in := range []string{"first", "second"} {
		body := `{"model":"gpt-test","input":"` + in + `"`
		if prev != "" {
			body += `,"previous_response_id":"` + prev + `"`
		}
		r := cl.post(one, body+`}`)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		prev = gjson.Get(r.body, "id").String()
	}
	cl.up.Script("a", relaytest.Step{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"120"}}})
	cl.post(two, `{"model":"gpt-test","input":"bench a"}`)
	r := cl.post(two, `{"model":"gpt-test","input":"third","previous_response_id":"`+prev+`"}`)
	if r.status != http.StatusOK {
		t.Fatalf("the moved turn: status %d: %s", r.status, r.body)
	}
	reqs := cl.up.Requests()
	last := reqs[len(reqs)-1]
	if last.Account != "b" || gjson.GetBytes(last.Body, "previous_response_id").Exists() ||
		!strings.Contains(string(last.Body), "first") || !strings.Contains(string(last.Body), "Echo: second") {
		t.Fatalf("b got %s", last.Body)
	}
}
