package fields

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
)

func TestWire(t *testing.T) {
	var h sr.ConfluentHeader
	for _, c := range []struct {
		id  int32
		idx []int
	}{{1, nil}, {0x7fffffff, nil}, {-1, nil}, {42, []int{0}}, {42, []int{1}}, {42, []int{0, 0}}, {7, []int{3, 1, 200}}} {
		b := AppendWire(nil, c.id, c.idx)
		// same bytes as franz-go's serde header
		want, _ := h.AppendEncode(nil, int(uint32(c.id)), c.idx)
		if !bytes.Equal(b, want) {
			t.Errorf("%v: %x, franz-go %x", c, b, want)
		}
		value := append(b, "payload"...)
		id, idx, payload, err := ParseWire(value, c.idx != nil)
		if err != nil {
			t.Fatal(err)
		}
		if id != c.id || fmt.Sprint(idx) != fmt.Sprint(c.idx) || string(payload) != "payload" {
			t.Errorf("%v: got %d %v %q", c, id, idx, payload)
		}
	}
	// [0] written explicitly (count 1, index 0) parses as [0]
	if _, idx, p, err := ParseWire([]byte{0, 0, 0, 0, 1, 2, 0, 'x'}, true); err != nil || fmt.Sprint(idx) != "[0]" || string(p) != "x" {
		t.Errorf("explicit [0]: %v %q %v", idx, p, err)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0, 0, 0}, {1, 0, 0, 0, 1}, {0, 0, 0, 0, 1, 0x80}, {0, 0, 0, 0, 1, 1}, {0, 0, 0, 0, 1, 4, 2}, {0, 0, 0, 0, 1, 2, 1}} {
		if _, _, _, err := ParseWire(bad, true); !errors.Is(err, ErrMalformed) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}
