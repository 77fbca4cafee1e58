package policy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/internal/promreg"
)

type metrics struct {
	records   *prometheus.CounterVec // result: delivered, dropped
	fields    *prometheus.CounterVec // action: redact, mask, tokenize, encrypted
	evals     prometheus.Counter
	cacheHits prometheus.Counter
	failures  *prometheus.CounterVec // reason: eval, timeout, undefined, decision, value, topic
	reloads   *prometheus.CounterVec // result: ok, rejected
	// share groups (shareack.go)
	shareAcks      prometheus.Counter
	shareAckErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		records: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_records_total",
			Help: "Fetched records the policy interceptor decided on, by result (delivered, dropped).",
		}, []string{"result"})),
		fields: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_fields_total",
			Help: "Record fields changed by policy decisions, by action (redact, mask, tokenize, encrypted).",
		}, []string{"action"})),
		evals: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_policy_evaluations_total",
			Help: "OPA evaluations of the decision query (cache misses).",
		})),
		cacheHits: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_policy_cache_hits_total",
			Help: "Decisions served from the decision cache.",
		})),
		failures: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_fail_closed_total",
			Help: "Records handled by on_error (dropped or fully redacted) because no valid decision could be made, by reason.",
		}, []string{"reason"})),
		reloads: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_policy_reloads_total",
			Help: "Policy and catalog reloads, by result (ok, rejected: the old policy stays).",
		}, []string{"result"})),
		shareAcks: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_policy_share_acknowledged_total",
			Help: "Share-group records the policy dropped that Strait acknowledged (ACCEPT) in the client's next ShareFetch or ShareAcknowledge.",
		})),
		shareAckErrors: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_policy_share_ack_errors_total",
			Help: "Partitions whose acknowledgement, carried for Strait alone, the broker refused (those records time out and are redelivered).",
		})),
	}
}
