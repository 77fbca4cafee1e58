package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestBase(t *testing.T) {
	base, err := Base(5)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
		if err != nil {
			t.Fatalf("port %d of the range is not free: %v", base+i, err)
		}
		ln.Close()
	}
	// A range that overlaps a port in use is not free.
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+2))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if free(base, 5) {
		t.Fatal("a range with a busy port was reported free")
	}
}
