package gateway

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/llama-orch/llama-orch/gateway/admission"
)

// msBuckets are the `le` bounds of the latency histograms, in milliseconds.
var msBuckets = []float64{1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000}

// unknownLabel marks a label not known when a series moves (SPEC §8).
const unknownLabel = "-"

// labelBudget folds label values beyond a budget of distinct values into
// "other" (SPEC §8 cardinality budgets).
type labelBudget struct {
	mu    sync.Mutex
	max   int
	known map[string]struct{}
}

func newLabelBudget(max int) *labelBudget {
	return &labelBudget{max: max, known: make(map[string]struct{})}
}

func (b *labelBudget) value(v string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.known[v]; ok {
		return v
	}
	if len(b.known) >= b.max {
		return "other"
	}
	b.known[v] = struct{}{}
	return v
}

// gwMetrics is the gateway's metric set. Series are created on first use and
// cached by the metrics.Set; per-task costs are a name lookup, never per token.
type gwMetrics struct {
	set *metrics.Set

	engineVersion, poolID, replicaID, reason *labelBudget
}

func newMetrics() *gwMetrics {
	return &gwMetrics{
		set:           metrics.NewSet(),
		engineVersion: newLabelBudget(64),
		poolID:        newLabelBudget(256),
		replicaID:     newLabelBudget(1024),
		reason:        newLabelBudget(16),
	}
}

// seriesLabels are the labels a task's series carry.
type seriesLabels struct {
	engine, engineVersion, poolID, replicaID, priority string
}

func (m *gwMetrics) fold(l seriesLabels) seriesLabels {
	if l.engineVersion == "" {
		l.engineVersion = unknownLabel
	}
	if l.replicaID == "" {
		l.replicaID = unknownLabel
	}
	l.engineVersion = m.engineVersion.value(l.engineVersion)
	l.poolID = m.poolID.value(l.poolID)
	l.replicaID = m.replicaID.value(l.replicaID)
	return l
}

func (m *gwMetrics) enqueued(l seriesLabels) {
	l = m.fold(l)
	m.set.GetOrCreateCounter(fmt.Sprintf(`tasks_enqueued_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q,priority=%q}`,
		l.engine, l.engineVersion, l.poolID, l.replicaID, l.priority)).Inc()
}

func (m *gwMetrics) started(l seriesLabels) {
	l = m.fold(l)
	m.set.GetOrCreateCounter(fmt.Sprintf(`tasks_started_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q,priority=%q}`,
		l.engine, l.engineVersion, l.poolID, l.replicaID, l.priority)).Inc()
}

func (m *gwMetrics) canceled(l seriesLabels, reason string) {
	l = m.fold(l)
	m.set.GetOrCreateCounter(fmt.Sprintf(`tasks_canceled_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q,reason=%q}`,
		l.engine, l.engineVersion, l.poolID, l.replicaID, m.reason.value(reason))).Inc()
}

func (m *gwMetrics) rejected(engine, reason string) {
	if engine == "" {
		engine = unknownLabel
	}
	m.set.GetOrCreateCounter(fmt.Sprintf(`tasks_rejected_total{engine=%q,reason=%q}`, engine, m.reason.value(reason))).Inc()
}

func (m *gwMetrics) backpressure(engine, policy string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`admission_backpressure_events_total{engine=%q,policy=%q}`, engine, policy)).Inc()
}

func (m *gwMetrics) firstToken(l seriesLabels, ms float64) {
	l = m.fold(l)
	m.set.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`latency_first_token_ms{engine=%q,engine_version=%q,pool_id=%q,priority=%q}`,
		l.engine, l.engineVersion, l.poolID, l.priority), msBuckets).Update(ms)
}

func (m *gwMetrics) decode(l seriesLabels, ms float64) {
	l = m.fold(l)
	m.set.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`latency_decode_ms{engine=%q,engine_version=%q,pool_id=%q,priority=%q}`,
		l.engine, l.engineVersion, l.poolID, l.priority), msBuckets).Update(ms)
}

func (m *gwMetrics) tokens(l seriesLabels, in, out int) {
	l = m.fold(l)
	if in > 0 {
		m.set.GetOrCreateCounter(fmt.Sprintf(`tokens_in_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q}`,
			l.engine, l.engineVersion, l.poolID, l.replicaID)).Add(in)
	}
	if out > 0 {
		m.set.GetOrCreateCounter(fmt.Sprintf(`tokens_out_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q}`,
			l.engine, l.engineVersion, l.poolID, l.replicaID)).Add(out)
	}
}

// registerPoolGauges writes the pools' live gauges at scrape time, so their
// labels (engine_version becomes known after the first health check) are
// always current and no stale series is left behind.
func (m *gwMetrics) registerPoolGauges(pools []*pool) {
	m.set.RegisterMetricsWriter(func(w io.Writer) {
		for _, p := range pools {
			ver := m.engineVersion.value(p.engineVersion())
			pid := m.poolID.value(p.id)
			for prio := admission.Priority(0); prio < admission.NumPriorities; prio++ {
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`queue_depth{engine=%q,engine_version=%q,pool_id=%q,priority=%q}`,
					p.engine, ver, pid, prio), uint64(p.queue.LenPriority(prio)))
			}
			for _, r := range p.replicas {
				rid := m.replicaID.value(r.ID)
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`replica_inflight{engine=%q,pool_id=%q,replica_id=%q}`, p.engine, pid, rid), uint64(max(r.InFlight(), 0)))
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`replica_slots{engine=%q,pool_id=%q,replica_id=%q}`, p.engine, pid, rid), uint64(r.Slots()))
				ready := uint64(0)
				if r.Ready() {
					ready = 1
				}
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`replica_ready{engine=%q,pool_id=%q,replica_id=%q}`, p.engine, pid, rid), ready)
			}
		}
	})
}

// WritePrometheus writes every series in Prometheus text format.
func (m *gwMetrics) WritePrometheus(w io.Writer) { m.set.WritePrometheus(w) }

func reasonLabel(code string) string { return strings.ToLower(code) }
