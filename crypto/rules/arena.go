package rules

import (
	"sync"

	"github.com/strait-proxy/strait/interceptor"
)

// Arena hands out a pooled buffer for the rewritten batches of one exchange
// (every partition of a Produce request or Fetch response is appended to
// it); the buffer goes back to the pool once the proxy is done with the
// exchange (OnDone), so a 1 MiB batch costs no allocation.
type Arena struct {
	x   *interceptor.Exchange
	ref *[]byte
	b   []byte
}

// NewArena is the arena of exchange x; it takes a buffer on first use.
func NewArena(x *interceptor.Exchange) *Arena { return &Arena{x: x} }

// Buf is where the next partition's batches are appended.
func (a *Arena) Buf() []byte {
	if a.ref == nil {
		a.ref = arenas.Get().(*[]byte)
		a.b = (*a.ref)[:0]
		a.x.OnDone(a.release)
	}
	return a.b
}

// Keep records that out (Buf() with one partition appended) is in use and
// returns that partition's bytes.
func (a *Arena) Keep(out []byte) []byte {
	start := len(a.b)
	a.b = out
	return out[start:len(out):len(out)]
}

// release returns the buffer to the pool, unless it grew past what is worth
// keeping for every connection.
func (a *Arena) release() {
	if cap(a.b) > 16<<20 {
		return
	}
	*a.ref = a.b[:0]
	arenas.Put(a.ref)
}

var arenas = sync.Pool{New: func() any { return new([]byte) }}
