package policy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	records   *prometheus.CounterVec // result: delivered, dropped
	fields    *prometheus.CounterVec // action: redact, mask, tokenize, encrypted
	evals     prometheus.Counter
	cacheHits prometheus.Counter
	failures  *prometheus.CounterVec // reason: eval, timeout, undefined, decision, value, topic
	reloads   *prometheus.CounterVec // result: ok, rejected
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		records: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_records_total",
			Help: "Fetched records the policy interceptor decided on, by result (delivered, dropped).",
		}, []string{"result"})),
		fields: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_fields_total",
			Help: "Record fields changed by policy decisions, by action (redact, mask, tokenize, encrypted).",
		}, []string{"action"})),
		evals: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_policy_evaluations_total",
			Help: "OPA evaluations of the decision query (cache misses).",
		})),
		cacheHits: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_policy_cache_hits_total",
			Help: "Decisions served from the decision cache.",
		})),
		failures: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_fail_closed_total",
			Help: "Records handled by on_error (dropped or fully redacted) because no valid decision could be made, by reason.",
		}, []string{"reason"})),
		reloads: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_reloads_total",
			Help: "Policy and catalog reloads, by result (ok, rejected: the old policy stays).",
		}, []string{"result"})),
	}
}

// register registers c, or returns the collector already registered under
// its name (several policy interceptors may share one registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if v, ok := are.ExistingCollector.(C); ok {
				return v
			}
		}
	}
	return c
}
