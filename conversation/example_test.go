package conversation_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
)

// A Memory keeps each record for its TTL, under the API key that made it.
func Example() {
	ctx := context.Background()
	store := &conversation.Memory{MaxBytes: 64 << 20, TTL: time.Hour}

	// The relay writes the record; the Store keeps its bytes.
	store.Put(ctx, "key-a", "resp_1", []byte(`{"response_id":"resp_1","api_key_id":"key-a","account_id":"acct-1"}`))

	rec, err := store.Get(ctx, "key-a", "resp_1")
	fmt.Println(string(rec), err)

	// Another key cannot read it.
	_, err = store.Get(ctx, "key-b", "resp_1")
	fmt.Println(errors.Is(err, conversation.ErrNotFound))

	store.Delete(ctx, "key-a", "resp_1")
	_, err = store.Get(ctx, "key-a", "resp_1")
	fmt.Println(errors.Is(err, conversation.ErrNotFound), store.Bytes())
	// Output:
	// {"response_id":"resp_1","api_key_id":"key-a","account_id":"acct-1"} <nil>
	// true
	// true 0
}
