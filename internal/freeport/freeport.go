// Package freeport finds ranges of free TCP ports on 127.0.0.1. Strait
// serves broker node n on base+n, so tests, the demo and the benchmark need
// contiguous ranges, not single ports.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

var mu sync.Mutex // one search at a time within a process

// Base returns p such that p..p+n-1 are free on 127.0.0.1 right now. It stays
// below the usual ephemeral range (32768+) so that the kernel does not hand
// these ports to outgoing connections meanwhile.
func Base(n int) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		base := 20000 + rand.IntN(12000)
		if free(base, n) {
			return base, nil
		}
	}
	return 0, errors.New("freeport: no range of free ports on 127.0.0.1")
}

func free(base, n int) bool {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
		if err != nil {
			return false
		}
		lns = append(lns, ln)
	}
	return true
}
