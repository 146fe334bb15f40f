package hookcall

import (
	"context"
	"testing"
)

// deep recurses through frames of about 256 bytes, n deep: a driver's call
// path.
//
//go:noinline
func deep(n int) int {
	var pad [32]int
	pad[n%32] = n
	if n == 0 {
		return pad[0]
	}
	return deep(n-1) + pad[n%32]
}

// BenchmarkRunnerCall is one bounded host call whose callee runs about
// 10 KiB deep (a Redis or SQL client's call path), and one that does not.
func BenchmarkRunnerCall(b *testing.B) {
	for _, c := range []struct {
		name  string
		depth int
	}{{"shallow", 1}, {"deep", 40}} {
		b.Run(c.name, func(b *testing.B) {
			var r Runner
			defer r.End()
			ctx := context.Background()
			fn := func(context.Context) error { deep(c.depth); return nil }
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Call(ctx, 0, fn, nil, nil, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
