package relay

import (
	"strings"
	"testing"
)

func TestCloseReason(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	r := closeReason(long)
	if len(r) > 120 || !strings.HasPrefix(long, r) || strings.ContainsRune(r, '\uFFFD') {
		t.Fatalf("reason %d bytes: %q", len(r), r)
	}
	if closeReason("short") != "short" {
		t.Fatal("short reason changed")
	}
}
