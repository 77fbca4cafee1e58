package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Metrics are Strait's proxy metrics. Per-API series are resolved once, at
// start, so the hot path only increments.
type Metrics struct {
	connsTotal   *prometheus.CounterVec
	connsActive  *prometheus.GaugeVec
	connErrors   *prometheus.CounterVec
	dialErrors   *prometheus.CounterVec
	ready        prometheus.Gauge
	listeners    prometheus.Gauge
	requests     [numKeys]prometheus.Counter
	reqBytes     [numKeys]prometheus.Counter
	respBytes    [numKeys]prometheus.Counter
	latency      [numKeys]prometheus.Observer
	localAnswers [numKeys]prometheus.Counter
	spliced      [2]prometheus.Counter // request, response
	panics       prometheus.Counter
	budgetWaits  prometheus.Counter
	reauthPause  prometheus.Histogram
}

// NewMetrics registers the proxy metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_connections_total", Help: "Client connections accepted, by listener.",
		}, []string{"listener"}),
		connsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strait_connections_active", Help: "Client connections open now, by listener.",
		}, []string{"listener"}),
		connErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_connection_errors_total", Help: "Client connections closed because of an error, by reason.",
		}, []string{"reason"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strait_upstream_dial_errors_total", Help: "Failed upstream dials (TCP, TLS or upstream hooks such as SASL), by upstream node (-1: bootstrap).",
		}, []string{"node"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strait_ready", Help: "1 once upstream metadata has been fetched.",
		}),
		listeners: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strait_broker_listeners", Help: "Per-broker listeners open now.",
		}),
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_requests_total", Help: "Requests received from clients, by API.",
	}, []string{"api"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_bytes_total", Help: "Frame bytes moved, by API and direction (request: client to broker, response: broker to client).",
	}, []string{"api", "direction"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "strait_request_duration_seconds",
		Help:    "Time from a request leaving Strait to its response arriving back, by API (includes the broker's time).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
	}, []string{"api"})
	local := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_local_responses_total", Help: "Requests answered by Strait itself (ApiVersions, interceptor short-circuits), by API.",
	}, []string{"api"})
	spliced := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_spliced_frames_total", Help: "Large frames no interceptor decodes, forwarded socket to socket with splice(2), by direction.",
	}, []string{"direction"})
	m.spliced[0], m.spliced[1] = spliced.WithLabelValues("request"), spliced.WithLabelValues("response")
	for k := range int16(numKeys) {
		name := kmsg.NameForKey(k)
		if name == "Unknown" || name == "" {
			name = strconv.Itoa(int(k))
		}
		m.requests[k] = requests.WithLabelValues(name)
		m.reqBytes[k] = bytes.WithLabelValues(name, "request")
		m.respBytes[k] = bytes.WithLabelValues(name, "response")
		m.latency[k] = latency.WithLabelValues(name)
		m.localAnswers[k] = local.WithLabelValues(name)
	}
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "strait_panics_total", Help: "Panics recovered in a session; each closed only its own connection.",
	})
	m.budgetWaits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "strait_frame_budget_waits_total", Help: "Client frames that had to wait for room in limits.max_buffered_bytes.",
	})
	m.reauthPause = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "strait_upstream_reauth_pause_seconds",
		Help:    "How long a client's requests waited while its upstream connection re-authenticated (KIP-368): in-flight responses drained, then the SASL exchange.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
	})
	reg.MustRegister(m.panics, m.budgetWaits, m.reauthPause)
	reg.MustRegister(m.connsTotal, m.connsActive, m.connErrors, m.dialErrors, m.ready, m.listeners, requests, bytes, latency, local, spliced)
	return m
}

func apiIndex(key int16) int16 {
	if key < 0 || key >= numKeys {
		return numKeys - 1
	}
	return key
}
