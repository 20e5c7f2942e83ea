package gateway

import (
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
	"github.com/llama-orch/llama-orch/gateway/catalog"
)

// msBuckets are the `le` bounds of the latency histograms, in milliseconds.
var msBuckets = []float64{1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000}

// unknownLabel marks a label not known when a series moves (SPEC §8).
const unknownLabel = "-"

// otherLabel is the value every label value beyond its budget folds into.
const otherLabel = "other"

// Label cardinality budgets: distinct values per label (SPEC §8,
// OC-METRICS-7102). engine is an allowlist of the engines orchd speaks, so a
// client naming an unknown engine cannot take a place in it. device has no
// SPEC budget: it is scoped by replica_id, and each named replica reports at
// most budgetDevicesPerReplica devices by name (replicas folded into "other"
// report theirs as "other" too).
const (
	budgetEngineVersion     = 64
	budgetPoolID            = 256
	budgetReplicaID         = 1024
	budgetReason            = 16
	budgetTenant            = 256
	budgetMode              = 4
	budgetDevicesPerReplica = 16
	budgetModelID           = 1024
	budgetResult            = 4
)

// knownEngines are the engine label's values besides "-" and "other".
var knownEngines = map[string]bool{engines.LlamaCpp: true, engines.VLLM: true, engines.TGI: true, engines.Triton: true}

// labelBudget folds label values beyond a budget of distinct values into
// "other" (SPEC §8 cardinality budgets). It remembers at most max values;
// "-" and "other" themselves never take a place.
type labelBudget struct {
	mu    sync.Mutex
	max   int
	known map[string]struct{}
}

func newLabelBudget(max int) *labelBudget {
	return &labelBudget{max: max, known: make(map[string]struct{})}
}

func (b *labelBudget) value(v string) string {
	if v == unknownLabel || v == otherLabel {
		return v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.known[v]; ok {
		return v
	}
	if len(b.known) >= b.max {
		return otherLabel
	}
	b.known[v] = struct{}{}
	return v
}

// size is the number of distinct values admitted so far.
func (b *labelBudget) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.known)
}

// gwMetrics is the gateway's metric set. Series are created on first use and
// cached by the metrics.Set; per-task costs are a name lookup, never per token.
// Every series name and label set is listed in testdata/metrics_contract.tsv.
type gwMetrics struct {
	set   *metrics.Set
	cache sync.Map // seriesKey → *metrics.Counter | *metrics.PrometheusHistogram

	engineVersion, poolID, replicaID, tenant, mode *labelBudget
	// cancelReason and rejectReason budget tasks_canceled_total and
	// tasks_rejected_total apart: each has its own 16 reasons.
	cancelReason, rejectReason *labelBudget
	// modelID budgets model_state; verifyReason and verifyResult budget
	// catalog_verifications_total.
	modelID, verifyReason, verifyResult *labelBudget
}

func newMetrics() *gwMetrics {
	return &gwMetrics{
		set:           metrics.NewSet(),
		engineVersion: newLabelBudget(budgetEngineVersion),
		poolID:        newLabelBudget(budgetPoolID),
		replicaID:     newLabelBudget(budgetReplicaID),
		tenant:        newLabelBudget(budgetTenant),
		mode:          newLabelBudget(budgetMode),
		cancelReason:  newLabelBudget(budgetReason),
		rejectReason:  newLabelBudget(budgetReason),
		modelID:       newLabelBudget(budgetModelID),
		verifyReason:  newLabelBudget(budgetReason),
		verifyResult:  newLabelBudget(budgetResult),
	}
}

// verification counts one catalog verification (SPEC §8).
func (m *gwMetrics) verification(result, reason, engine string) {
	engine, result, reason = engineLabel(engine), m.verifyResult.value(result), m.verifyReason.value(reason)
	m.counter(seriesKey{name: "verify", l: seriesLabels{engine: engine, priority: result}, extra: reason}, func() string {
		return series("catalog_verifications_total", "result", result, "reason", reason, "engine", engine)
	}).Inc()
}

// registerCatalogGauges writes model_state{model_id,state} at scrape time,
// one series per catalog model and lifecycle state: 1 for its current state,
// 0 for the others (so `model_state{state="Deprecated"} == 1` selects the
// deprecated models). Models folded into "other" add up: those series count.
func (m *gwMetrics) registerCatalogGauges(c *catalog.Catalog) {
	m.set.RegisterMetricsWriter(func(w io.Writer) {
		var g gaugeSet
		c.EachState(func(model string, cur catalog.State) {
			id := m.modelID.value(model)
			for _, st := range catalog.States {
				v := 0.0
				if cur == st {
					v = 1
				}
				g.add(series("model_state", "model_id", id, "state", string(st)), v, sumOf)
			}
		})
		g.write(w)
	})
}

// engineLabel keeps the engines orchd speaks and "-"; anything else (an
// engine a rejected request named) is "other".
func engineLabel(e string) string {
	switch {
	case e == "":
		return unknownLabel
	case e == unknownLabel || knownEngines[e]:
		return e
	}
	return otherLabel
}

// series formats name{k1="v1",…} in the Prometheus text format: label
// values are escaped (\\, \", \n), other control characters become spaces
// and invalid UTF-8 becomes U+FFFD, so a value an engine reported (its
// version, a device name) can neither break the exposition nor the name
// validation of the metrics package.
func series(name string, kv ...string) string {
	var b strings.Builder
	b.Grow(len(name) + 16*len(kv))
	b.WriteString(name)
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		writeLabelValue(&b, kv[i+1])
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func writeLabelValue(b *strings.Builder, v string) {
	for _, r := range v { // an invalid byte comes as utf8.RuneError: written as U+FFFD
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '"':
			b.WriteString(`\"`)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
}

// seriesLabels are the labels a task's series carry.
type seriesLabels struct {
	engine, engineVersion, poolID, replicaID, priority string
}

func (m *gwMetrics) fold(l seriesLabels) seriesLabels {
	if l.engineVersion == "" || l.engineVersion == "unknown" { // not reported yet (the views say "unknown")
		l.engineVersion = unknownLabel
	}
	if l.replicaID == "" {
		l.replicaID = unknownLabel
	}
	l.engine = engineLabel(l.engine)
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
		return series("tasks_enqueued_total", "engine", l.engine, "engine_version", l.engineVersion,
			"pool_id", l.poolID, "replica_id", l.replicaID, "priority", l.priority)
	}).Inc()
}

func (m *gwMetrics) started(l seriesLabels) {
	l = m.fold(l)
	m.counter(seriesKey{name: "start", l: l}, func() string {
		return series("tasks_started_total", "engine", l.engine, "engine_version", l.engineVersion,
			"pool_id", l.poolID, "replica_id", l.replicaID, "priority", l.priority)
	}).Inc()
}

func (m *gwMetrics) canceled(l seriesLabels, reason string) {
	l = m.fold(l)
	reason = m.cancelReason.value(reason)
	l.priority = ""
	m.counter(seriesKey{name: "cancel", l: l, extra: reason}, func() string {
		return series("tasks_canceled_total", "engine", l.engine, "engine_version", l.engineVersion,
			"pool_id", l.poolID, "replica_id", l.replicaID, "reason", reason)
	}).Inc()
}

func (m *gwMetrics) rejected(engine, reason string) {
	engine = engineLabel(engine)
	reason = m.rejectReason.value(reason)
	m.counter(seriesKey{name: "reject", l: seriesLabels{engine: engine}, extra: reason}, func() string {
		return series("tasks_rejected_total", "engine", engine, "reason", reason)
	}).Inc()
}

func (m *gwMetrics) backpressure(engine, policy string) {
	engine = engineLabel(engine)
	m.counter(seriesKey{name: "bp", l: seriesLabels{engine: engine}, extra: policy}, func() string {
		return series("admission_backpressure_events_total", "engine", engine, "policy", policy)
	}).Inc()
}

func (m *gwMetrics) firstToken(l seriesLabels, ms float64) {
	l = m.fold(l)
	l.replicaID = ""
	m.histogram(seriesKey{name: "ttft", l: l}, func() string {
		return series("latency_first_token_ms", "engine", l.engine, "engine_version", l.engineVersion,
			"pool_id", l.poolID, "priority", l.priority)
	}).Update(ms)
}

func (m *gwMetrics) decode(l seriesLabels, ms float64) {
	l = m.fold(l)
	l.replicaID = ""
	m.histogram(seriesKey{name: "decode", l: l}, func() string {
		return series("latency_decode_ms", "engine", l.engine, "engine_version", l.engineVersion,
			"pool_id", l.poolID, "priority", l.priority)
	}).Update(ms)
}

func (m *gwMetrics) tokens(l seriesLabels, in, out int) {
	l = m.fold(l)
	l.priority = ""
	if in > 0 {
		m.counter(seriesKey{name: "tin", l: l}, func() string {
			return series("tokens_in_total", "engine", l.engine, "engine_version", l.engineVersion,
				"pool_id", l.poolID, "replica_id", l.replicaID)
		}).Add(in)
	}
	if out > 0 {
		m.counter(seriesKey{name: "tout", l: l}, func() string {
			return series("tokens_out_total", "engine", l.engine, "engine_version", l.engineVersion,
				"pool_id", l.poolID, "replica_id", l.replicaID)
		}).Add(out)
	}
}

// gaugeSet collects one scrape's gauges. Two pools or replicas whose ids
// folded into "other" would write the same series twice, which Prometheus
// refuses; gaugeSet merges them instead: counts add up, ratios and states
// keep the maximum.
type gaugeSet struct {
	idx  map[string]int
	keys []string
	vals []float64
}

// combine says how a gauge merges folded series.
type combine bool

const (
	sumOf combine = true
	maxOf combine = false
)

func (g *gaugeSet) add(s string, v float64, c combine) {
	if g.idx == nil {
		g.idx = make(map[string]int)
	}
	if i, ok := g.idx[s]; ok {
		if c == sumOf {
			g.vals[i] += v
		} else {
			g.vals[i] = max(g.vals[i], v)
		}
		return
	}
	g.idx[s] = len(g.keys)
	g.keys = append(g.keys, s)
	g.vals = append(g.vals, v)
}

func (g *gaugeSet) write(w io.Writer) {
	buf := make([]byte, 0, 256)
	for i, k := range g.keys {
		buf = append(buf[:0], k...)
		buf = append(buf, ' ')
		buf = strconv.AppendFloat(buf, g.vals[i], 'g', -1, 64)
		buf = append(buf, '\n')
		_, _ = w.Write(buf)
	}
}

// registerPoolGauges writes the pools' live gauges at scrape time, so their
// labels (engine_version becomes known after the first health check) are
// always current and no stale series is left behind. pools returns the
// pools at scrape time (a config apply may add or remove pools).
func (m *gwMetrics) registerPoolGauges(pools func() []*pool) {
	m.set.RegisterMetricsWriter(func(w io.Writer) {
		var g gaugeSet
		for _, p := range pools() {
			m.poolGauges(&g, p)
		}
		g.write(w)
	})
}

// poolGauges adds one pool's gauges: queue depth per priority and the
// queue's capacity (so alerts can compare the two); per replica
// its in-flight tasks, slots, readiness and breaker state; and the engine's
// own gauges — KV cache usage, GPU utilization and VRAM — only where the
// engine reports them (absent, not zero, otherwise: llama.cpp reports none).
func (m *gwMetrics) poolGauges(g *gaugeSet, p *pool) {
	engine := engineLabel(p.engine)
	ver := m.engineVersion.value(p.engineVersion())
	pid := m.poolID.value(p.id)
	for prio := admission.Priority(0); prio < admission.NumPriorities; prio++ {
		g.add(series("queue_depth", "engine", engine, "engine_version", ver, "pool_id", pid, "priority", prio.String()),
			float64(p.queue.LenPriority(prio)), sumOf)
	}
	g.add(series("queue_capacity", "engine", engine, "pool_id", pid), float64(p.queue.Capacity()), sumOf)
	rs := p.set()
	for i, r := range rs.replicas {
		rid := m.replicaID.value(r.ID)
		g.add(series("replica_inflight", "engine", engine, "pool_id", pid, "replica_id", rid), float64(max(r.InFlight(), 0)), sumOf)
		g.add(series("replica_slots", "engine", engine, "pool_id", pid, "replica_id", rid), float64(r.Slots()), sumOf)
		ready := 0.0
		if r.Ready() {
			ready = 1
		}
		g.add(series("replica_ready", "engine", engine, "pool_id", pid, "replica_id", rid), ready, sumOf)
		g.add(series("breaker_state", "pool_id", pid, "replica_id", rid), r.BreakerState().Gauge(), maxOf)

		st := rs.states[i]
		l := st.load.Load()
		if l == nil {
			continue
		}
		rver := unknownLabel
		if v := st.engineVersion.Load(); v != nil && *v != "" {
			rver = *v
		}
		rver = m.engineVersion.value(rver)
		if l.HasKVCacheUsage {
			g.add(series("kv_cache_usage_ratio", "engine", engine, "engine_version", rver, "pool_id", pid, "replica_id", rid),
				l.KVCacheUsage, maxOf)
		}
		for j, d := range l.Devices {
			dev := d.Device
			if j >= budgetDevicesPerReplica || rid == otherLabel {
				// A folded replica's devices fold too: device names are
				// only bounded per named replica.
				dev = otherLabel
			}
			if d.HasUtilization {
				g.add(series("gpu_utilization", "engine", engine, "engine_version", rver, "pool_id", pid, "replica_id", rid, "device", dev),
					d.Utilization, maxOf)
			}
			if d.HasVRAMUsed {
				g.add(series("vram_used_bytes", "engine", engine, "engine_version", rver, "pool_id", pid, "replica_id", rid, "device", dev),
					d.VRAMUsedBytes, sumOf)
			}
		}
	}
}

// WritePrometheus writes every series in Prometheus text format.
func (m *gwMetrics) WritePrometheus(w io.Writer) { m.set.WritePrometheus(w) }

func reasonLabel(code string) string { return strings.ToLower(code) }

func (m *gwMetrics) preemption(mode, engine string) {
	engine, mode = engineLabel(engine), m.mode.value(mode)
	m.counter(seriesKey{name: "preempt", l: seriesLabels{engine: engine}, extra: mode}, func() string {
		return series("preemptions_total", "mode", mode, "engine", engine)
	}).Inc()
}

func (m *gwMetrics) resumption(engine string) {
	engine = engineLabel(engine)
	m.counter(seriesKey{name: "resume", l: seriesLabels{engine: engine}}, func() string {
		return series("resumptions_total", "engine", engine)
	}).Inc()
}

// registerSchedGauges writes admission_share and deadlines_met_ratio at
// scrape time; a priority with no deadline-carrying task has no series.
// Tenants beyond the budget share one "other" series: their shares add up.
func (m *gwMetrics) registerSchedGauges(shares *shareTracker, deadlines *deadlineTracker) {
	m.set.RegisterMetricsWriter(func(w io.Writer) {
		var g gaugeSet
		shares.each(func(tenant string, p admission.Priority, v float64) {
			g.add(series("admission_share", "tenant", m.tenant.value(tenant), "priority", p.String()), v, sumOf)
		})
		deadlines.each(func(p admission.Priority, v float64) {
			g.add(series("deadlines_met_ratio", "priority", p.String()), v, maxOf)
		})
		g.write(w)
	})
}

// retry counts tasks moved to another replica (why: retry, failover).
func (m *gwMetrics) retry(engine, why string) {
	engine = engineLabel(engine)
	m.counter(seriesKey{name: "retry", l: seriesLabels{engine: engine}, extra: why}, func() string {
		return series("task_retries_total", "engine", engine, "why", why)
	}).Inc()
}

func (m *gwMetrics) breakerTransition(poolID, replicaID, to string) {
	poolID, replicaID = m.poolID.value(poolID), m.replicaID.value(replicaID)
	m.counter(seriesKey{name: "brk", l: seriesLabels{poolID: poolID, replicaID: replicaID}, extra: to}, func() string {
		return series("breaker_transitions_total", "pool_id", poolID, "replica_id", replicaID, "to", to)
	}).Inc()
}
