package relaytest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
)

// Encrypted content: the opaque blobs of reasoning and compaction items.
// The real service binds them to the account (organization) that made
// them; the fake does the same so that a relay moving a conversation
// between accounts meets the same refusal. A blob has the Fernet layout
// the real ones have (so relays that check the shape accept it):
//
//	0x80 | timestamp (8, big endian) | IV (16) | ciphertext (16*k) | HMAC-SHA256 (32)
//
// in URL-safe base64 with padding. The key is derived from the account's
// name, so every Upstream agrees on which account made a blob, and nothing
// random goes in: the IV comes from the account's blob counter.

const (
	blobVersion  = 0x80
	blobHeader   = 1 + 8 + 16
	blobMAC      = sha256.Size
	blobMinBytes = blobHeader + 16 + blobMAC

	blobReasoning  = 'r'
	blobCompaction = 'c'
)

// blobKey is the key of the account named name.
func blobKey(name string) []byte {
	sum := sha256.Sum256([]byte("relaytest encrypted content\x00" + name))
	return sum[:]
}

// keystream XORs b (whole blocks) with a stream derived from key and iv.
func keystream(key, iv, b []byte) {
	var blk [4]byte
	for off := 0; off < len(b); off += 16 {
		h := hmac.New(sha256.New, key)
		h.Write(iv)
		binary.BigEndian.PutUint32(blk[:], uint32(off/16))
		h.Write(blk[:])
		ks := h.Sum(nil)
		for i := range 16 {
			b[off+i] ^= ks[i]
		}
	}
}

// sealBlob returns the encrypted content of item id of the given kind,
// made by the account named name: its n-th blob, at unix time ts.
func sealBlob(name string, kind byte, id string, n uint64, ts int64) string {
	key := blobKey(name)
	plain := make([]byte, 0, 1+8+len(id)+16)
	plain = append(plain, kind)
	plain = binary.BigEndian.AppendUint64(plain, n)
	plain = append(plain, id...)
	pad := 16 - len(plain)%16
	for range pad {
		plain = append(plain, byte(pad))
	}

	b := make([]byte, 0, blobHeader+len(plain)+blobMAC)
	b = append(b, blobVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	h := hmac.New(sha256.New, key)
	h.Write([]byte("iv"))
	h.Write(plain[:9]) // kind and counter: unique per blob of the account
	b = append(b, h.Sum(nil)[:16]...)
	ct := len(b)
	b = append(b, plain...)
	keystream(key, b[9:blobHeader], b[ct:])
	h = hmac.New(sha256.New, key)
	h.Write(b)
	b = h.Sum(b)
	return base64.URLEncoding.EncodeToString(b)
}

// openBlob reports whether blob is encrypted content of the given kind
// made by the account named name.
func openBlob(name string, kind byte, blob string) bool {
	b, err := base64.URLEncoding.DecodeString(blob)
	if err != nil || len(b) < blobMinBytes || (len(b)-blobHeader-blobMAC)%16 != 0 || b[0] != blobVersion {
		return false
	}
	key := blobKey(name)
	body := b[:len(b)-blobMAC]
	h := hmac.New(sha256.New, key)
	h.Write(body)
	if !hmac.Equal(h.Sum(nil), b[len(body):]) {
		return false
	}
	plain := append([]byte(nil), body[blobHeader:]...)
	keystream(key, body[9:blobHeader], plain)
	pad := int(plain[len(plain)-1])
	return plain[0] == kind && pad >= 1 && pad <= 16 && len(plain) >= 9+pad
}
