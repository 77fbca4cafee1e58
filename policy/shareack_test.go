package policy

import (
	"fmt"
	"testing"
)

// TestMergeAcks: Strait's ACCEPTs join the client's batches sorted and
// without overlap; the client's own type wins on offsets it acknowledges,
// except GAP; offsets Strait acknowledged before are cut out.
func TestMergeAcks(t *testing.T) {
	b := func(first, last int64, types ...int8) ackBatch { return ackBatch{first, last, types} }
	r := func(first, last int64) offRange { return offRange{first, last} }
	for _, tc := range []struct {
		client      []ackBatch
		ours, strip []offRange
		want        string
		sent        string
	}{
		{nil, []offRange{r(3, 4)}, nil, "[{3 4 [1]}]", "[{3 4}]"},
		{[]ackBatch{b(0, 2, 1), b(8, 9, 2)}, []offRange{r(3, 4), r(6, 6)}, nil, "[{0 2 [1]} {3 4 [1]} {6 6 [1]} {8 9 [2]}]", "[{3 4} {6 6}]"},
		// franz-go's gaps for the dropped offsets become ACCEPT
		{[]ackBatch{b(0, 0, 1), b(1, 1, 0), b(2, 2, 1)}, []offRange{r(1, 1)}, nil, "[{0 0 [1]} {1 1 [1]} {2 2 [1]}]", "[{1 1}]"},
		{[]ackBatch{b(0, 3, 1, 0, 0, 3)}, []offRange{r(1, 1)}, nil, "[{0 3 [1 1 0 3]}]", "[{1 1}]"},
		// a RELEASE the client chose stays
		{[]ackBatch{b(5, 6, 2)}, []offRange{r(5, 7)}, nil, "[{5 6 [2]} {7 7 [1]}]", "[{7 7}]"},
		// already acknowledged by Strait: cut out of the client's batch
		{[]ackBatch{b(0, 4, 0)}, nil, []offRange{r(2, 3)}, "[{0 1 [0]} {4 4 [0]}]", "[]"},
		{[]ackBatch{b(0, 2, 1)}, nil, nil, "[{0 2 [1]}]", "[]"},
	} {
		out, sent, _, _ := mergeAcks(tc.client, tc.ours, tc.strip)
		if got := fmt.Sprint(out); got != tc.want {
			t.Errorf("merge(%v, %v, %v) = %s, want %s", tc.client, tc.ours, tc.strip, got, tc.want)
		}
		if got := fmt.Sprint(sent); got != tc.sent && !(got == "[]" && tc.sent == "[]") {
			t.Errorf("merge(%v, %v, %v) sent %s, want %s", tc.client, tc.ours, tc.strip, got, tc.sent)
		}
		end := int64(-1)
		for _, x := range out {
			if x.first <= end || x.last < x.first || (len(x.types) != 1 && int64(len(x.types)) != x.last-x.first+1) {
				t.Errorf("merge(%v, %v, %v): bad batches %v", tc.client, tc.ours, tc.strip, out)
			}
			end = x.last
		}
	}
}
