package wsconn

import (
	"context"
	"testing"
)

// keyRecorder keeps the masking key of every small frame written to it.
type keyRecorder struct{ keys [][4]byte }

func (k *keyRecorder) Read([]byte) (int, error) { select {} }
func (k *keyRecorder) Close() error             { return nil }
func (k *keyRecorder) Write(p []byte) (int, error) {
	var key [4]byte
	copy(key[:], p[2:6]) // payloads under 126 bytes: the key follows two header bytes
	k.keys = append(k.keys, key)
	return len(p), nil
}

// TestMaskKeysUnpredictable: masking keys do not repeat across more
// frames than one batch of random bytes holds, and two connections do not
// share a sequence (as a generator seeded alike would).
func TestMaskKeysUnpredictable(t *testing.T) {
	const frames = 3*maskBatch/4 + 7 // crosses two refills
	seqs := make([][][4]byte, 2)
	for i := range seqs {
		rec := &keyRecorder{}
		c := newConn(rec)
		for range frames {
			if err := c.WriteText(context.Background(), []byte("hi")); err != nil {
				t.Fatal(err)
			}
		}
		seqs[i] = rec.keys
	}
	seen := map[[4]byte]bool{}
	for _, seq := range seqs {
		if len(seq) != frames {
			t.Fatalf("%d frames written, want %d", len(seq), frames)
		}
		for _, k := range seq {
			if seen[k] {
				t.Fatalf("masking key %x repeated within %d frames", k, 2*frames)
			}
			seen[k] = true
		}
	}
}
