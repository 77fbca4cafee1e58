package interop

import "testing"

// The harness's own Prometheus text parsing.
func TestSumCounter(t *testing.T) {
	body := `# HELP strait_requests_total Requests.
# TYPE strait_requests_total counter
strait_requests_total{api="Fetch"} 12
strait_requests_total{api="Produce"} 3
strait_requests_total{api="ProduceX"} 100
strait_requests_total_other{api="Produce"} 7
strait_ready 1
strait_connection_errors_total{reason="frame_too_large"} 2 1700000000000
`
	if n, s := sumCounterWith(body, "strait_requests_total", `api="Produce"`); n != 3 || len(s) != 1 {
		t.Errorf("Produce: %v %v", n, s)
	}
	if n, _ := sumCounter(body, "strait_requests_total"); n != 115 {
		t.Errorf("all requests: %v", n)
	}
	if n, _ := sumCounter(body, "strait_ready"); n != 1 {
		t.Errorf("ready: %v", n)
	}
	if n, _ := sumCounter(body, "strait_connection_errors_total"); n != 2 {
		t.Errorf("with timestamp: %v", n)
	}
	if n, s := sumCounterWith(body, "strait_requests_total", `api="Metadata"`); n != 0 || len(s) != 0 {
		t.Errorf("absent: %v %v", n, s)
	}
}
