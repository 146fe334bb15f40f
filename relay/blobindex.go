package relay

import (
	"crypto/sha256"
	"sync"

	"github.com/tidwall/gjson"
)

// maxBlobs bounds the blob index: about 6 MiB at most. Past it the oldest
// entries go; a blob whose maker was forgotten is sent as the client gave
// it, and an upstream that cannot decrypt it costs one retry without
// reasoning items (retrySameAccount).
const maxBlobs = 1 << 17

// blobIndex remembers which account made each encrypted item the relay
// relayed (reasoning and compaction items' encrypted_content), per API
// key, so that an item is never sent to an account that cannot decrypt
// it. It holds digests, not the blobs. The zero value is ready to use.
type blobIndex struct {
	mu    sync.Mutex
	maker map[blobDigest]string
	ring  []blobDigest // insertion order, for eviction
	next  int
}

type blobDigest [16]byte

func digestBlob(apiKey, blob string) blobDigest {
	h := sha256.New()
	h.Write([]byte(apiKey))
	h.Write([]byte{0})
	h.Write([]byte(blob))
	var d blobDigest
	copy(d[:], h.Sum(nil))
	return d
}

// learn records the account that made the encrypted items of an output
// array.
func (x *blobIndex) learn(apiKey string, output []byte, account string) {
	gjson.ParseBytes(output).ForEach(func(_, item gjson.Result) bool {
		if blob := item.Get("encrypted_content"); blob.Type == gjson.String && blob.Str != "" {
			x.put(digestBlob(apiKey, blob.Str), account)
		}
		return true
	})
}

func (x *blobIndex) put(d blobDigest, account string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.maker == nil {
		x.maker = make(map[blobDigest]string)
	}
	if _, ok := x.maker[d]; ok {
		x.maker[d] = account
		return
	}
	if len(x.ring) < maxBlobs {
		x.ring = append(x.ring, d)
	} else {
		delete(x.maker, x.ring[x.next])
		x.ring[x.next] = d
		x.next = (x.next + 1) % maxBlobs
	}
	x.maker[d] = account
}

// madeBy returns the account that made blob, if the relay knows it.
func (x *blobIndex) madeBy(apiKey, blob string) (string, bool) {
	d := digestBlob(apiKey, blob)
	x.mu.Lock()
	defer x.mu.Unlock()
	a, ok := x.maker[d]
	return a, ok
}

// foreign reports a reasoning item whose encrypted content another
// account than acct made (as far as the relay knows).
func (x *blobIndex) foreign(apiKey string, item gjson.Result, acct string) bool {
	if item.Get("type").Str != "reasoning" {
		return false
	}
	blob := item.Get("encrypted_content")
	if blob.Type != gjson.String || blob.Str == "" {
		return false
	}
	maker, ok := x.madeBy(apiKey, blob.Str)
	return ok && maker != acct
}
