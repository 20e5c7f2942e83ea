package gateway

import (
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/llama-orch/llama-orch/balancer"
	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/gateway/admission"
)

// Label cardinality (issue 6 item 3, SPEC §8 budgets): 2,000 and then 4,000
// distinct tenants, replica ids, pool ids, engine versions, reasons, modes
// and client-named engines go through the real counter, histogram and gauge
// paths of gwMetrics. Each label keeps at most its budget of values plus
// "other" (and "-"), the exposition has no duplicate series, the series
// count does not move between 2,000 and 4,000 values, and neither does the
// heap — while the same drive with the budgets lifted grows it by megabytes.

// labelBudgets are the SPEC §8 budgets per label name, plus device's
// per-replica one.
var labelBudgets = map[string]int{
	"engine": 4, "engine_version": budgetEngineVersion, "pool_id": budgetPoolID, "replica_id": budgetReplicaID,
	"priority": 8, "reason": budgetReason, "tenant": budgetTenant, "mode": budgetMode,
}

// cardinalityRig is one gwMetrics with its trackers and a pool list the
// gauge writer reads.
type cardinalityRig struct {
	m      *gwMetrics
	shares *shareTracker
	pools  []*pool
	live   int // how many of pools the writer sees
}

// testPool builds a pool with n replicas named prefix-0…, each reporting
// its own engine version and a KV usage and one GPU.
func testPool(t testing.TB, id string, n int, prefix string, ver int) *pool {
	t.Helper()
	q, err := admission.NewQueue[*task](admission.Config{Capacity: 8})
	if err != nil {
		t.Fatal(err)
	}
	p := &pool{id: id, engine: engines.VLLM, queue: q}
	rs := &replicaSet{}
	for i := 0; i < n; i++ {
		r := balancer.NewReplica(i, prefix+"-"+strconv.Itoa(i), "http://127.0.0.1:1", 2)
		r.SetReady(i%2 == 0)
		st := &replicaState{}
		v := "0.11." + strconv.Itoa(ver+i)
		st.engineVersion.Store(&v)
		st.load.Store(&engines.Load{KVCacheUsage: 0.25, HasKVCacheUsage: true, Devices: []engines.DeviceLoad{
			{Device: "GPU-" + strconv.Itoa(i), Utilization: 0.5, HasUtilization: true, VRAMUsedBytes: 1 << 30, HasVRAMUsed: true}}})
		rs.replicas = append(rs.replicas, r)
		rs.states = append(rs.states, st)
	}
	p.cur.Store(rs)
	return p
}

// newCardinalityRig prepares pools for both phases (300 pools of 7 replicas
// each: 2,100 replica ids per phase) so the heap measured later holds them
// in both; unbudgeted lifts every budget (the control).
func newCardinalityRig(t testing.TB, unbudgeted bool) *cardinalityRig {
	c := &cardinalityRig{m: newMetrics(), shares: newShareTracker()}
	if unbudgeted {
		huge := func() *labelBudget { return newLabelBudget(1 << 30) }
		c.m.engineVersion, c.m.poolID, c.m.replicaID, c.m.tenant, c.m.mode = huge(), huge(), huge(), huge(), huge()
		c.m.cancelReason, c.m.rejectReason = huge(), huge()
	}
	for i := 0; i < 600; i++ {
		c.pools = append(c.pools, testPool(t, "pool-"+strconv.Itoa(i), 7, "rep-"+strconv.Itoa(i), 7*i))
	}
	// One replica reports 20 GPUs: beyond 16, its devices fold into "other".
	st := c.pools[0].set().states[0]
	l := &engines.Load{}
	for d := 0; d < 20; d++ {
		l.Devices = append(l.Devices, engines.DeviceLoad{Device: "GPU-x" + strconv.Itoa(d), Utilization: float64(d) / 20,
			HasUtilization: true, VRAMUsedBytes: float64(d+1) * (1 << 20), HasVRAMUsed: true})
	}
	st.load.Store(l)
	c.m.registerPoolGauges(func() []*pool { return c.pools[:c.live] })
	c.m.registerSchedGauges(c.shares, &deadlineTracker{})
	return c
}

// drive moves every label-carrying series once per i in [from, to), each
// time with values never seen before.
func (c *cardinalityRig) drive(from, to int) {
	m := c.m
	known := []string{engines.LlamaCpp, engines.VLLM, engines.TGI, engines.Triton}
	for i := from; i < to; i++ {
		s := strconv.Itoa(i)
		prio := admission.Priority(i % int(admission.NumPriorities))
		l := seriesLabels{engine: known[i%4], engineVersion: "b" + s, poolID: "p" + s, replicaID: "r" + s, priority: prio.String()}
		m.enqueued(seriesLabels{engine: l.engine, poolID: l.poolID, priority: l.priority})
		m.started(l)
		m.firstToken(l, float64(i%3000))
		m.decode(l, float64(i%5000))
		m.tokens(l, 7, 9)
		m.canceled(l, "why-"+s)
		m.rejected("client-engine-"+s, "code-"+s) // an engine a request named
		m.rejected(l.engine, "code-"+s)
		m.backpressure("client-engine-"+s, admission.PolicyReject)
		m.preemption("mode-"+s, l.engine)
		m.resumption("client-engine-" + s)
		m.retry(l.engine, "retry")
		m.breakerTransition("p"+s, "r"+s, balancer.Open.String())
		m.breakerTransition("p"+s, "r"+s, balancer.HalfOpen.String())
		c.shares.observe("tenant-"+s, prio)
	}
}

// scrape parses the exposition (strictly: a duplicate series fails) and
// returns it.
func (c *cardinalityRig) scrape(t *testing.T) []promSample {
	t.Helper()
	var sb strings.Builder
	c.m.WritePrometheus(&sb)
	ss, err := parseProm(sb.String())
	if err != nil {
		t.Fatalf("exposition: %v", err)
	}
	return ss
}

func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// checkBudgets asserts every label's distinct values per metric stay within
// its budget, beside "other" and "-".
func checkBudgets(t *testing.T, ss []promSample) {
	t.Helper()
	distinct := map[string]map[string]bool{} // metric|label → values
	devices := map[string]map[string]bool{}  // pool|replica → devices
	for _, s := range ss {
		for k, v := range s.labels {
			if v == otherLabel || v == unknownLabel {
				continue
			}
			key := s.name + "|" + k
			if distinct[key] == nil {
				distinct[key] = map[string]bool{}
			}
			distinct[key][v] = true
		}
		if d, ok := s.labels["device"]; ok && d != otherLabel {
			r := s.labels["pool_id"] + "|" + s.labels["replica_id"]
			if devices[r] == nil {
				devices[r] = map[string]bool{}
			}
			devices[r][d] = true
		}
	}
	for key, vals := range distinct {
		label := key[strings.IndexByte(key, '|')+1:]
		if b, ok := labelBudgets[label]; ok && len(vals) > b {
			t.Errorf("%s: %d distinct values, budget %d", key, len(vals), b)
		}
	}
	for key := range labelBudgets {
		seen := false
		for k := range distinct {
			seen = seen || strings.HasSuffix(k, "|"+key)
		}
		if !seen && key != "priority" {
			t.Errorf("no series carries %s: the drive missed it", key)
		}
	}
	for r, ds := range devices {
		if len(ds) > budgetDevicesPerReplica {
			t.Errorf("replica %s: %d devices", r, len(ds))
		}
	}
}

// check scrapes, checks the budgets and returns the series count; the
// parsed samples are dropped before the caller measures the heap.
func (c *cardinalityRig) check(t *testing.T) int {
	t.Helper()
	ss := c.scrape(t)
	checkBudgets(t, ss)
	return len(ss)
}

// TestCardinalityBudgets: values fold, series and heap stay flat.
func TestCardinalityBudgets(t *testing.T) {
	c := newCardinalityRig(t, false)
	c.live = 300
	c.scrape(t) // the pools' ids take their budgets' places first
	c.drive(0, 2000)
	n1 := c.check(t)
	heap1 := heapAfterGC()

	c.live = 600
	c.drive(2000, 4000)
	n2 := c.check(t)
	heap2 := heapAfterGC()

	if n1 != n2 {
		t.Errorf("series: %d after 2,000 distinct values, %d after 4,000: budgets must hold the count", n1, n2)
	}
	// Bounded in absolute terms too: every family's series fit its budgets.
	if n2 > 40000 {
		t.Errorf("%d series", n2)
	}
	for name, b := range map[string]*labelBudget{"engine_version": c.m.engineVersion, "pool_id": c.m.poolID,
		"replica_id": c.m.replicaID, "tenant": c.m.tenant, "mode": c.m.mode, "cancel reason": c.m.cancelReason,
		"reject reason": c.m.rejectReason} {
		if b.size() > b.max {
			t.Errorf("%s budget remembers %d values, max %d", name, b.size(), b.max)
		}
	}
	// The shareTracker's own map grows with the tenants it saw (~100 B
	// each); everything else must stay put.
	growth := int64(heap2) - int64(heap1)
	t.Logf("series %d → %d; heap %d → %d bytes (growth %d)", n1, n2, heap1, heap2, growth)
	const bound = 2 << 20
	if growth > bound {
		t.Errorf("heap grew %d bytes from 2,000 to 4,000 distinct values (bound %d)", growth, bound)
	}

	ss2 := c.scrape(t)
	// Folded pool and replica gauges merged, not repeated: the replica with
	// 20 GPUs shows 16 by name and "other" holding the rest's VRAM.
	other := find(ss2, "vram_used_bytes", map[string]string{"pool_id": "pool-0", "replica_id": "rep-0-0", "device": otherLabel})
	if want := float64(17+18+19+20) * (1 << 20); len(other) != 1 || other[0].value != want {
		t.Errorf("folded devices' VRAM: %v, want %v", other, want)
	}
	// Pools beyond the budget have all their replicas in "other"; 4 of every
	// 7 replicas are ready (even indexes), and the merged series sums them.
	ready := find(ss2, "replica_ready", map[string]string{"pool_id": otherLabel, "replica_id": otherLabel})
	if want := float64((600 - budgetPoolID) * 4); len(ready) != 1 || ready[0].value != want {
		t.Errorf("replica_ready{pool_id=other,replica_id=other} = %v, want %v", ready, want)
	}
	share := find(ss2, "admission_share", map[string]string{"tenant": otherLabel})
	if len(share) != 2 {
		t.Errorf("admission_share{tenant=other}: %v, want one per priority", share)
	}
}

// TestCardinalityControl shows the heap bound above can fail: with the
// budgets lifted, the same 2,000 more values grow the heap by far more than
// it (counter and histogram paths only: no scrape).
func TestCardinalityControl(t *testing.T) {
	c := newCardinalityRig(t, true)
	c.drive(0, 2000)
	heap1 := heapAfterGC()
	c.drive(2000, 4000)
	heap2 := heapAfterGC()
	runtime.KeepAlive(c)
	growth := int64(heap2) - int64(heap1)
	t.Logf("unbudgeted: heap growth %d bytes", growth)
	if growth < 4<<20 {
		t.Fatalf("unbudgeted drive grew the heap by only %d bytes: the flat-heap bound proves nothing", growth)
	}
}
