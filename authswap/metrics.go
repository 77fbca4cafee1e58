package authswap

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/internal/promreg"
)

type metrics struct {
	auth     *prometheus.CounterVec // mechanism, result, reason
	lookups  *prometheus.CounterVec // store, result
	upstream *prometheus.CounterVec // mechanism, result, reason
	reauth   *prometheus.CounterVec // mechanism, result, reason
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_authswap_authentications_total",
			Help: "Client authentications (mtls, PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) by result (success, failure) and failure reason.",
		}, []string{"mechanism", "result", "reason"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_authswap_credential_lookups_total",
			Help: "Upstream credential lookups by store (file, vault) and result (hit: cache, miss: asked the store, no_mapping, unavailable, invalid).",
		}, []string{"store", "result"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_authswap_upstream_authentications_total",
			Help: "Upstream SASL authentications by mechanism, result and failure reason (rejected, unsupported_mechanism, handshake, protocol).",
		}, []string{"mechanism", "result", "reason"}),
		reauth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_authswap_upstream_reauthentications_total",
			Help: "KIP-368 re-authentications of upstream connections in use, by mechanism, result and failure reason (anonymous, no_mapping, credentials_unavailable, sasl).",
		}, []string{"mechanism", "result", "reason"}),
	}
	for _, p := range []**prometheus.CounterVec{&m.auth, &m.lookups, &m.upstream, &m.reauth} {
		*p = promreg.Register(reg, *p) // every authswap generation counts into one series
	}
	return m
}
