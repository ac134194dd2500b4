package broker

import (
	"log/slog"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/time/rate"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Names of the limits, as they appear in telehub_mqtt_limit_hits_total.
const (
	limitConnectRate       = "connect_rate"
	limitClientConnectRate = "client_connect_rate"
	limitAuthFailureRate   = "auth_failure_rate"
	limitMaxConnections    = "max_connections"
	limitMessageRate       = "message_rate"
	limitPacketSize        = "packet_size"
	limitTopicLevels       = "topic_levels"
	limitTopicBytes        = "topic_bytes"
	limitTopicAlias        = "topic_alias"
	limitSubscriptions     = "subscriptions"
	limitSubscribeRate     = "subscribe_rate"
	limitRetained          = "retained_per_client"
	limitRetainedBytes     = "retained_bytes_per_client"
	limitRetainedTotal     = "retained_total"
)

// allLimits are the values of the limit label.
var allLimits = []string{limitConnectRate, limitClientConnectRate, limitAuthFailureRate, limitMaxConnections,
	limitMessageRate, limitPacketSize, limitTopicLevels, limitTopicBytes, limitTopicAlias, limitSubscriptions,
	limitSubscribeRate, limitRetained, limitRetainedBytes, limitRetainedTotal}

// brokerMetrics counts what happens at the broker's door.
type brokerMetrics struct {
	connects     prometheus.Counter
	authFailures prometheus.Counter
	limitHits    map[string]prometheus.Counter // resolved once: allLimits and the conform hook's
	aclDenied    map[string]prometheus.Counter // publish, subscribe, will
	// pubackLatency is the time a QoS 1/2 publish's acknowledgement waits
	// for the durable log (ackhold.go).
	pubackLatency prometheus.Observer

	open      [KindAnonymous + 1]atomic.Int64 // connected clients by kind
	connected sync.Map                        // *mqtt.Client -> Kind, while connected
}

func newBrokerMetrics(reg prometheus.Registerer) *brokerMetrics {
	f := promauto.With(reg)
	m := &brokerMetrics{
		connects:     f.NewCounter(prometheus.CounterOpts{Name: "telehub_mqtt_connects_total", Help: "MQTT connections accepted (CONNACK success)."}),
		authFailures: f.NewCounter(prometheus.CounterOpts{Name: "telehub_mqtt_auth_failures_total", Help: "MQTT connections refused for bad or missing credentials."}),
		pubackLatency: f.NewHistogram(prometheus.HistogramOpts{Name: "telehub_mqtt_puback_latency_seconds",
			Help: "Time a QoS 1/2 publish's acknowledgement is held until its readings are durable, from the publish's hand-over to the log " +
				"to the release of its PUBACK; observed once per group commit of a connection (the publishes one fsync made durable), by its first publish.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)}), // 0.1 ms to 1.6 s
		limitHits: map[string]prometheus.Counter{},
		aclDenied: map[string]prometheus.Counter{},
	}
	for _, k := range []Kind{KindDevice, KindIntegration, KindAnonymous} {
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_mqtt_connections", Help: "MQTT clients connected now, by kind.",
			ConstLabels: prometheus.Labels{"kind": k.String()}}, func() float64 { return float64(m.open[k].Load()) })
	}
	hits := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_mqtt_limit_hits_total",
		Help: "MQTT connections, packets, filters and retained messages refused by a limit (see the limit label)."}, []string{"limit"})
	for _, l := range append(allLimits, limitReceiveMaximum, limitKeepAlive) {
		m.limitHits[l] = hits.WithLabelValues(l)
	}
	denied := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_mqtt_acl_denied_total",
		Help: "MQTT publishes, subscriptions and will messages refused because the client may not use the topic."}, []string{"action"})
	for _, a := range []string{"publish", "subscribe", "will"} {
		m.aclDenied[a] = denied.WithLabelValues(a)
	}
	return m
}

// openConnections is the number of clients connected now.
func (m *brokerMetrics) openConnections() int64 {
	var n int64
	for i := range m.open {
		n += m.open[i].Load()
	}
	return n
}

func (m *brokerMetrics) up(cl *mqtt.Client, k Kind) {
	if _, loaded := m.connected.LoadOrStore(cl, k); !loaded {
		m.open[k].Add(1)
		m.connects.Inc()
	}
}

func (m *brokerMetrics) down(cl *mqtt.Client) {
	if k, ok := m.connected.LoadAndDelete(cl); ok {
		m.open[k.(Kind)].Add(-1)
	}
}

// warnLog writes warnings about refused clients and packets at a bounded
// rate, so that a flood of bad packets cannot flood the log or slow the hub;
// the next line that gets through says how many were left out.
type warnLog struct {
	log        *slog.Logger
	bucket     *rate.Limiter
	suppressed atomic.Int64
}

func newWarnLog(log *slog.Logger) *warnLog {
	return &warnLog{log: log, bucket: newLimiter(20, 100)}
}

// Warn logs msg unless too many lines were logged recently.
func (w *warnLog) Warn(msg string, args ...any) {
	if !w.bucket.Allow() {
		w.suppressed.Add(1)
		return
	}
	if n := w.suppressed.Swap(0); n > 0 {
		args = append(args, "similar_lines_suppressed", n)
	}
	w.log.Warn(msg, args...)
}
