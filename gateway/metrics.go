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
	set   *metrics.Set
	cache sync.Map // seriesKey → *metrics.Counter | *metrics.PrometheusHistogram

	engineVersion, poolID, replicaID, reason, tenant *labelBudget
}

func newMetrics() *gwMetrics {
	return &gwMetrics{
		set:           metrics.NewSet(),
		engineVersion: newLabelBudget(64),
		poolID:        newLabelBudget(256),
		replicaID:     newLabelBudget(1024),
		reason:        newLabelBudget(16),
		tenant:        newLabelBudget(256),
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

// seriesKey identifies one cached series: its name and labels.
type seriesKey struct {
	name  string
	l     seriesLabels
	extra string // reason, where the series has one
}

// counter returns the cached counter for key, creating it (with the
// formatted name) on first use: per task, a map lookup instead of a Sprintf.
func (m *gwMetrics) counter(k seriesKey, format func() string) *metrics.Counter {
	if c, ok := m.cache.Load(k); ok {
		return c.(*metrics.Counter)
	}
	c := m.set.GetOrCreateCounter(format())
	m.cache.Store(k, c)
	return c
}

func (m *gwMetrics) histogram(k seriesKey, format func() string) *metrics.PrometheusHistogram {
	if h, ok := m.cache.Load(k); ok {
		return h.(*metrics.PrometheusHistogram)
	}
	h := m.set.GetOrCreatePrometheusHistogramExt(format(), msBuckets)
	m.cache.Store(k, h)
	return h
}

func (m *gwMetrics) enqueued(l seriesLabels) {
	l = m.fold(l)
	m.counter(seriesKey{name: "enq", l: l}, func() string {
		return fmt.Sprintf(`tasks_enqueued_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q,priority=%q}`,
			l.engine, l.engineVersion, l.poolID, l.replicaID, l.priority)
	}).Inc()
}

func (m *gwMetrics) started(l seriesLabels) {
	l = m.fold(l)
	m.counter(seriesKey{name: "start", l: l}, func() string {
		return fmt.Sprintf(`tasks_started_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q,priority=%q}`,
			l.engine, l.engineVersion, l.poolID, l.replicaID, l.priority)
	}).Inc()
}

func (m *gwMetrics) canceled(l seriesLabels, reason string) {
	l = m.fold(l)
	reason = m.reason.value(reason)
	l.priority = ""
	m.counter(seriesKey{name: "cancel", l: l, extra: reason}, func() string {
		return fmt.Sprintf(`tasks_canceled_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q,reason=%q}`,
			l.engine, l.engineVersion, l.poolID, l.replicaID, reason)
	}).Inc()
}

func (m *gwMetrics) rejected(engine, reason string) {
	if engine == "" {
		engine = unknownLabel
	}
	reason = m.reason.value(reason)
	m.counter(seriesKey{name: "reject", l: seriesLabels{engine: engine}, extra: reason}, func() string {
		return fmt.Sprintf(`tasks_rejected_total{engine=%q,reason=%q}`, engine, reason)
	}).Inc()
}

func (m *gwMetrics) backpressure(engine, policy string) {
	m.counter(seriesKey{name: "bp", l: seriesLabels{engine: engine}, extra: policy}, func() string {
		return fmt.Sprintf(`admission_backpressure_events_total{engine=%q,policy=%q}`, engine, policy)
	}).Inc()
}

func (m *gwMetrics) firstToken(l seriesLabels, ms float64) {
	l = m.fold(l)
	l.replicaID = ""
	m.histogram(seriesKey{name: "ttft", l: l}, func() string {
		return fmt.Sprintf(`latency_first_token_ms{engine=%q,engine_version=%q,pool_id=%q,priority=%q}`,
			l.engine, l.engineVersion, l.poolID, l.priority)
	}).Update(ms)
}

func (m *gwMetrics) decode(l seriesLabels, ms float64) {
	l = m.fold(l)
	l.replicaID = ""
	m.histogram(seriesKey{name: "decode", l: l}, func() string {
		return fmt.Sprintf(`latency_decode_ms{engine=%q,engine_version=%q,pool_id=%q,priority=%q}`,
			l.engine, l.engineVersion, l.poolID, l.priority)
	}).Update(ms)
}

func (m *gwMetrics) tokens(l seriesLabels, in, out int) {
	l = m.fold(l)
	l.priority = ""
	if in > 0 {
		m.counter(seriesKey{name: "tin", l: l}, func() string {
			return fmt.Sprintf(`tokens_in_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q}`,
				l.engine, l.engineVersion, l.poolID, l.replicaID)
		}).Add(in)
	}
	if out > 0 {
		m.counter(seriesKey{name: "tout", l: l}, func() string {
			return fmt.Sprintf(`tokens_out_total{engine=%q,engine_version=%q,pool_id=%q,replica_id=%q}`,
				l.engine, l.engineVersion, l.poolID, l.replicaID)
		}).Add(out)
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
			for _, r := range p.set().replicas {
				rid := m.replicaID.value(r.ID)
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`replica_inflight{engine=%q,pool_id=%q,replica_id=%q}`, p.engine, pid, rid), uint64(max(r.InFlight(), 0)))
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`replica_slots{engine=%q,pool_id=%q,replica_id=%q}`, p.engine, pid, rid), uint64(r.Slots()))
				ready := uint64(0)
				if r.Ready() {
					ready = 1
				}
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`replica_ready{engine=%q,pool_id=%q,replica_id=%q}`, p.engine, pid, rid), ready)
				metrics.WriteGaugeUint64(w, fmt.Sprintf(`breaker_state{pool_id=%q,replica_id=%q}`, pid, rid), uint64(r.BreakerState().Gauge()))
			}
		}
	})
}

// WritePrometheus writes every series in Prometheus text format.
func (m *gwMetrics) WritePrometheus(w io.Writer) { m.set.WritePrometheus(w) }

func reasonLabel(code string) string { return strings.ToLower(code) }

func (m *gwMetrics) preemption(mode, engine string) {
	m.counter(seriesKey{name: "preempt", l: seriesLabels{engine: engine}, extra: mode}, func() string {
		return fmt.Sprintf(`preemptions_total{mode=%q,engine=%q}`, mode, engine)
	}).Inc()
}

func (m *gwMetrics) resumption(engine string) {
	m.counter(seriesKey{name: "resume", l: seriesLabels{engine: engine}}, func() string {
		return fmt.Sprintf(`resumptions_total{engine=%q}`, engine)
	}).Inc()
}

// registerSchedGauges writes admission_share and deadlines_met_ratio at
// scrape time; a priority with no deadline-carrying task has no series.
func (m *gwMetrics) registerSchedGauges(shares *shareTracker, deadlines *deadlineTracker) {
	m.set.RegisterMetricsWriter(func(w io.Writer) {
		shares.each(func(tenant string, p admission.Priority, v float64) {
			fmt.Fprintf(w, "admission_share{tenant=%q,priority=%q} %g\n", m.tenant.value(tenant), p, v)
		})
		deadlines.each(func(p admission.Priority, v float64) {
			fmt.Fprintf(w, "deadlines_met_ratio{priority=%q} %g\n", p, v)
		})
	})
}

// retry counts tasks moved to another replica (why: retry, failover).
func (m *gwMetrics) retry(engine, why string) {
	m.counter(seriesKey{name: "retry", l: seriesLabels{engine: engine}, extra: why}, func() string {
		return fmt.Sprintf(`task_retries_total{engine=%q,why=%q}`, engine, why)
	}).Inc()
}

func (m *gwMetrics) breakerTransition(poolID, replicaID, to string) {
	poolID, replicaID = m.poolID.value(poolID), m.replicaID.value(replicaID)
	m.counter(seriesKey{name: "brk", l: seriesLabels{poolID: poolID, replicaID: replicaID}, extra: to}, func() string {
		return fmt.Sprintf(`breaker_transitions_total{pool_id=%q,replica_id=%q,to=%q}`, poolID, replicaID, to)
	}).Inc()
}
