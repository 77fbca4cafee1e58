package rules

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/internal/promreg"
)

// Metrics are the counters both interceptors feed (registered once per
// registry: an encrypt and a decrypt on one registry share them).
type Metrics struct {
	Sealed, Opened         prometheus.Counter
	SealFail, OpenFail     prometheus.Counter
	LeftEncrypted          prometheus.Counter
	KMSErrors              *prometheus.CounterVec // by op: encrypt, decrypt
	PartitionsFailedClosed prometheus.Counter
	UnwrapThrottled        prometheus.Counter
	BatchesSplit           prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	recs := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_crypto_records_total",
		Help: "Records encrypted or decrypted, by operation and result.",
	}, []string{"op", "result"}))
	return &Metrics{
		Sealed:        recs.WithLabelValues("encrypt", "ok"),
		SealFail:      recs.WithLabelValues("encrypt", "error"),
		Opened:        recs.WithLabelValues("decrypt", "ok"),
		OpenFail:      recs.WithLabelValues("decrypt", "error"),
		LeftEncrypted: recs.WithLabelValues("decrypt", "left_encrypted"),
		KMSErrors: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_kms_errors_total",
			Help: "Key-store failures (unreachable, denied, key missing) seen while encrypting or decrypting, by operation.",
		}, []string{"op"})),
		PartitionsFailedClosed: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_crypto_partitions_refused_total",
			Help: "Produce or fetch partitions answered with an error instead of being forwarded (fail closed).",
		})),
		BatchesSplit: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_crypto_batches_split_total",
			Help: "Produce batches that would have exceeded the topic's max.message.bytes once encrypted, sent upstream as several batches in requests of their own.",
		})),
		UnwrapThrottled: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_kms_unwrap_throttled_total",
			Help: "Decryptions refused (retriable) because unwrapping their data key would pass the KMS unwrap concurrency or rate bound.",
		})),
	}
}
