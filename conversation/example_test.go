package conversation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
)

// A Memory keeps each turn for its TTL, under the API key that made it.
func Example() {
	ctx := context.Background()
	store := &conversation.Memory{MaxBytes: 64 << 20, TTL: time.Hour}

	store.Put(ctx, &conversation.Record{
		ResponseID: "resp_1",
		APIKeyID:   "key-a",
		Model:      "gpt-5",
		AccountID:  "acct-1",
		Input:      json.RawMessage(`[{"role":"user","content":"hello"}]`),
		Output:     json.RawMessage(`[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}]`),
		CreatedAt:  time.Now(),
	})

	rec, err := store.Get(ctx, "key-a", "resp_1")
	fmt.Println(rec.AccountID, err)

	// Another key cannot read it.
	_, err = store.Get(ctx, "key-b", "resp_1")
	fmt.Println(errors.Is(err, conversation.ErrNotFound))

	store.Delete(ctx, "key-a", "resp_1")
	_, err = store.Get(ctx, "key-a", "resp_1")
	fmt.Println(errors.Is(err, conversation.ErrNotFound), store.Bytes())
	// Output:
	// acct-1 <nil>
	// true
	// true 0
}
