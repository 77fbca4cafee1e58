package promtext

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	body := `# HELP strait_requests_total Requests.
# TYPE strait_requests_total counter
strait_requests_total{api="Fetch"} 12
strait_requests_total{api="Produce"} 3
strait_requests_total{api="ProduceX"} 100
strait_requests_total_other{api="Produce"} 7
strait_ready 1
strait_connection_errors_total{reason="frame_too_large"} 2 1700000000000
strait_crypto_records_total{op="encrypt",result="ok"} 5
strait_crypto_records_total{op="encrypt",result="error"} 1
strait_odd{msg="a b}"} 9
strait_bad{api="x"} notanumber

`
	s := Parse(body)
	for _, tc := range []struct {
		name string
		with []string
		want float64
	}{
		{"strait_requests_total", []string{`api="Produce"`}, 3},
		{"strait_requests_total", nil, 115},
		{"strait_ready", nil, 1},
		{"strait_connection_errors_total", nil, 2}, // timestamp ignored
		{"strait_requests_total", []string{`api="Metadata"`}, 0},
		{"strait_crypto_records_total", []string{`op="encrypt",result="ok"`}, 5},
		{"strait_crypto_records_total", []string{`op="encrypt"`, `result="error"`}, 1},
		{"strait_odd", nil, 9},
		{"strait_bad", nil, 0},
	} {
		if got := s.Sum(tc.name, tc.with...); got != tc.want {
			t.Errorf("Sum(%s, %q) = %v, want %v", tc.name, tc.with, got, tc.want)
		}
	}
	if got := s.Series("strait_requests_total", `api="Produce`); !slices.Equal(got, []string{`strait_requests_total{api="Produce"}`, `strait_requests_total{api="ProduceX"}`}) {
		t.Errorf("Series = %q", got)
	}
	if !s.Has("strait_ready") || !s.Has("strait_requests_total") || s.Has("strait_requests") || s.Has("strait_bad") {
		t.Error("Has")
	}
}
