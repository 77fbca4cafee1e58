package encrypt

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/internal/promreg"
)

type metrics struct {
	sealed, opened         prometheus.Counter
	sealFail, openFail     prometheus.Counter
	leftEncrypted          prometheus.Counter
	kmsErrors              *prometheus.CounterVec
	partitionsFailedClosed prometheus.Counter
	unwrapThrottled        prometheus.Counter
	batchesSplit           prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	recs := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_crypto_records_total",
		Help: "Records encrypted or decrypted, by operation and result.",
	}, []string{"op", "result"}))
	return &metrics{
		sealed:        recs.WithLabelValues("encrypt", "ok"),
		sealFail:      recs.WithLabelValues("encrypt", "error"),
		opened:        recs.WithLabelValues("decrypt", "ok"),
		openFail:      recs.WithLabelValues("decrypt", "error"),
		leftEncrypted: recs.WithLabelValues("decrypt", "left_encrypted"),
		kmsErrors: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_kms_errors_total",
			Help: "Key-store failures (unreachable, denied, key missing) seen while encrypting or decrypting, by operation.",
		}, []string{"op"})),
		partitionsFailedClosed: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_crypto_partitions_refused_total",
			Help: "Produce or fetch partitions answered with an error instead of being forwarded (fail closed).",
		})),
		batchesSplit: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_crypto_batches_split_total",
			Help: "Produce batches that would have exceeded the topic's max.message.bytes once encrypted, sent upstream as several batches in requests of their own.",
		})),
		unwrapThrottled: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strait_kms_unwrap_throttled_total",
			Help: "Decryptions refused (retriable) because unwrapping their data key would pass the KMS unwrap concurrency or rate bound.",
		})),
	}
}
