package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterTwiceSharesTheSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "strait_test_total", Help: "test"}
	a := Register(reg, prometheus.NewCounter(opts))
	b := Register(reg, prometheus.NewCounter(opts))
	if a != b {
		t.Fatal("a second registration under the same name got a collector of its own")
	}
	if c := Register(nil, prometheus.NewCounter(opts)); c == nil {
		t.Fatal("nil registry: no collector returned")
	}
}
