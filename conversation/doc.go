// Package conversation keeps what the relay needs to move a conversation
// between upstream accounts: a record of each served turn (its input and
// output items, the response it continued, the account that served it),
// scoped to the API key that created it.
//
// An upstream account knows only the responses it made, and an encrypted
// reasoning or compaction item decrypts only on the account that made it.
// When a previous_response_id chain must leave its account (the account
// cools down, fails or is gone), the relay rebuilds the chain's context
// from records and sends it, without previous_response_id, to another
// account; it removes reasoning items another account encrypted.
//
// Records hold user content: prompts, answers, tool calls. Keep them only
// as long as a conversation may continue (Memory's TTL), never log them,
// and delete a user's records when asked (Store.Delete).
package conversation
