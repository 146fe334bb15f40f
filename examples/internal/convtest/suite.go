package convtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/relaykit/responsesrelay/conversation"
)

// Run runs the behaviour every Store shares as subtests, each on a fresh,
// empty store from newStore (which closes it at cleanup). Expiry is left
// to each store's own tests: how time moves differs per store.
func Run(t *testing.T, newStore func(t *testing.T) conversation.Store) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, newStore(t)) })
	t.Run("ScopedByAPIKey", func(t *testing.T) { testScopedByAPIKey(t, newStore(t)) })
	t.Run("HostileIDs", func(t *testing.T) { testHostileIDs(t, newStore(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newStore(t)) })
}

func testRoundTrip(t *testing.T, s conversation.Store) {
	MustMiss(t, s, "k1", "resp_1")
	r := Record("k1", "resp_1")
	Put(t, s, "k1", "resp_1", r)
	MustGet(t, s, "k1", "resp_1", r)
	// Bytes come back as they went in, even ones that are no JSON, and an
	// empty record is a record.
	bare := []byte{0xff, 0x00, '['}
	Put(t, s, "k1", "resp_bare", bare)
	MustGet(t, s, "k1", "resp_bare", bare)
	Put(t, s, "k1", "resp_empty", nil)
	MustGet(t, s, "k1", "resp_empty", []byte{})
	// The Store keeps no reference to the caller's bytes.
	buf := Record("k1", "resp_2")
	Put(t, s, "k1", "resp_2", buf)
	want := bytes.Clone(buf)
	buf[0] = 'X'
	MustGet(t, s, "k1", "resp_2", want)

	// A Put replaces.
	r2 := []byte(`{"response_id":"resp_1","account_id":"acct-9"}`)
	Put(t, s, "k1", "resp_1", r2)
	MustGet(t, s, "k1", "resp_1", r2)

	MustDelete(t, s, "k1", "resp_1")
	MustMiss(t, s, "k1", "resp_1")
	MustGet(t, s, "k1", "resp_2", want)
}

// A response id is found, replaced and deleted only under the key that
// made it.
func testScopedByAPIKey(t *testing.T, s conversation.Store) {
	a := Record("key-a", "resp_1")
	Put(t, s, "key-a", "resp_1", a)
	MustMiss(t, s, "key-b", "resp_1")
	MustMiss(t, s, "", "resp_1")
	MustDelete(t, s, "key-b", "resp_1")
	MustGet(t, s, "key-a", "resp_1", a)

	b := Record("key-b", "resp_1")
	Put(t, s, "key-b", "resp_1", b)
	MustGet(t, s, "key-a", "resp_1", a)
	MustGet(t, s, "key-b", "resp_1", b)
	MustDelete(t, s, "key-a", "resp_1")
	MustMiss(t, s, "key-a", "resp_1")
	MustGet(t, s, "key-b", "resp_1", b)
	MustDelete(t, s, "key-a", "resp_1") // deleting a missing record is no error
}

// Ids the client chooses may hold any bytes, ones a database column
// refuses included: a Get of them is a miss, never another record, a
// Delete a no-op, and the store keeps working.
func testHostileIDs(t *testing.T, s conversation.Store) {
	Put(t, s, "k", "resp_1", Record("k", "resp_1"))
	for _, id := range []string{"resp_\x00", "resp_\xff\xfe", "*", strings.Repeat("r", 64<<10)} {
		MustMiss(t, s, "k", id)
		MustMiss(t, s, id, "resp_1")
		MustDelete(t, s, "k", id)
	}
	MustGet(t, s, "k", "resp_1", Record("k", "resp_1"))
}

// Concurrent Puts, Gets and Deletes (run with -race) each get an answer
// that belongs to their own key.
func testConcurrent(t *testing.T, s conversation.Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			key := fmt.Sprint("k", w%2)
			for i := range 60 {
				id := fmt.Sprint("resp_", i%8)
				var err error
				switch i % 3 {
				case 0:
					err = s.Put(ctx, key, id, Record(key, id))
				case 1:
					var r []byte
					if r, err = s.Get(ctx, key, id); err == nil && !bytes.Equal(r, Record(key, id)) {
						t.Errorf("Get(%s, %s) = %.60q, another record", key, id, r)
					}
					if errors.Is(err, conversation.ErrNotFound) {
						err = nil
					}
				case 2:
					err = s.Delete(ctx, key, id)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
