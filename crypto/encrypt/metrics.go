package encrypt

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sealed, opened         prometheus.Counter
	sealFail, openFail     prometheus.Counter
	leftEncrypted          prometheus.Counter
	kmsErrors              *prometheus.CounterVec
	partitionsFailedClosed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	recs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_crypto_records_total",
		Help: "Records encrypted or decrypted, by operation and result.",
	}, []string{"op", "result"})
	m := &metrics{
		sealed:        recs.WithLabelValues("encrypt", "ok"),
		sealFail:      recs.WithLabelValues("encrypt", "error"),
		opened:        recs.WithLabelValues("decrypt", "ok"),
		openFail:      recs.WithLabelValues("decrypt", "error"),
		leftEncrypted: recs.WithLabelValues("decrypt", "left_encrypted"),
		kmsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_kms_errors_total",
			Help: "Key-store failures (unreachable, denied, key missing) seen while encrypting or decrypting, by operation.",
		}, []string{"op"}),
		partitionsFailedClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_crypto_partitions_refused_total",
			Help: "Produce or fetch partitions answered with an error instead of being forwarded (fail closed).",
		}),
	}
	for _, c := range []prometheus.Collector{recs, m.kmsErrors, m.partitionsFailedClosed} {
		if err := reg.Register(c); err != nil {
			// Both interceptors may share a registry: reuse the first.
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				switch v := are.ExistingCollector.(type) {
				case *prometheus.CounterVec:
					if c == recs {
						recs = v
						m.sealed, m.sealFail = v.WithLabelValues("encrypt", "ok"), v.WithLabelValues("encrypt", "error")
						m.opened, m.openFail = v.WithLabelValues("decrypt", "ok"), v.WithLabelValues("decrypt", "error")
						m.leftEncrypted = v.WithLabelValues("decrypt", "left_encrypted")
					} else {
						m.kmsErrors = v
					}
				case prometheus.Counter:
					m.partitionsFailedClosed = v
				}
			}
		}
	}
	return m
}
