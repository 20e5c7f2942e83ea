package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Deploy files (issue 6 item 5): the Prometheus alert rules and the Grafana
// dashboard may only name metrics of the contract
// (testdata/metrics_contract.tsv), with label matchers on labels those
// metrics have. A renamed metric or label fails here, not silently in
// production.

const (
	alertsPath    = "../deploy/prometheus/alerts.yml"
	dashboardPath = "../deploy/grafana/orchd-dashboard.json"
)

// promqlRef is one metric selector found in an expression.
type promqlRef struct {
	metric string
	labels []string // label names matched in {…}
}

// PromQL words that are never metric names.
var promqlAggregators = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
	"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true, "Inf": true, "NaN": true,
	"inf": true, "nan": true,
}

// promqlGrouping are the keywords followed by a parenthesised label list.
var promqlGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// labelValuesRE is Grafana's label_values([metric[{…}],] label) variable query.
var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*)?[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)

// promqlRefs finds the metric selectors of a PromQL expression (or a Grafana
// label_values query). It is a scanner, not a full parser: strings, range
// and subquery brackets, grouping label lists, numbers and durations are
// skipped; an identifier followed by "(" is a function; any other
// identifier that is not a keyword is a metric. Unbalanced brackets or
// strings are errors.
func promqlRefs(expr string) ([]promqlRef, error) {
	if m := labelValuesRE.FindStringSubmatch(expr); m != nil {
		if m[1] == "" {
			return nil, nil
		}
		ref := promqlRef{metric: m[1]}
		if m[2] != "" {
			ls, err := matcherLabels(m[2][1 : len(m[2])-1])
			if err != nil {
				return nil, err
			}
			ref.labels = ls
		}
		return []promqlRef{ref}, nil
	}
	var refs []promqlRef
	depth := 0
	s := expr
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	closing := func(open, close byte) (int, error) { // index of the matching close from s[i] == open
		n := 0
		for j := i; j < len(s); j++ {
			switch s[j] {
			case '"', '\'', '`':
				end, err := skipString(s, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case open:
				n++
			case close:
				n--
				if n == 0 {
					return j, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c in %q", open, expr)
	}
	afterOffset := false
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '[':
			j, err := closing('[', ']')
			if err != nil {
				return nil, err
			}
			i = j + 1
		case c == '{': // a selector without a metric name: {__name__=…}
			j, err := closing('{', '}')
			if err != nil {
				return nil, err
			}
			i = j + 1
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced ) in %q", expr)
			}
			i++
		case c == '$': // a Grafana variable: $x, ${x}, $__rate_interval
			i++
			if i < len(s) && s[i] == '{' {
				j, err := closing('{', '}')
				if err != nil {
					return nil, err
				}
				i = j + 1
				continue
			}
			for i < len(s) && isIdentByte(s[i], true) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			for i < len(s) && (isIdentByte(s[i], true) || s[i] == '.' ||
				(s[i] == '+' || s[i] == '-') && (s[i-1] == 'e' || s[i-1] == 'E')) {
				i++ // a number or a duration (5m, 1h30m, 1e3)
			}
			afterOffset = false
		case isIdentByte(c, false):
			start := i
			for i < len(s) && isIdentByte(s[i], true) {
				i++
			}
			word := s[start:i]
			if afterOffset { // offset's duration starts with a digit; a word here is a syntax error
				return nil, fmt.Errorf("offset without a duration in %q", expr)
			}
			j := i
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case promqlGrouping[word]:
				if next != '(' {
					return nil, fmt.Errorf("%s without a label list in %q", word, expr)
				}
				end, err := closing('(', ')')
				if err != nil {
					return nil, err
				}
				i = end + 1
			case word == "offset":
				afterOffset = true
			case promqlKeywords[word], promqlAggregators[word]:
			case next == '(':
				// a function call: its arguments are scanned as they come
			default:
				ref := promqlRef{metric: word}
				if next == '{' {
					end, err := closing('{', '}')
					if err != nil {
						return nil, err
					}
					ls, err := matcherLabels(s[i+1 : end])
					if err != nil {
						return nil, fmt.Errorf("%s: %w", word, err)
					}
					ref.labels = ls
					i = end + 1
				} else {
					i = j
				}
				refs = append(refs, ref)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return refs, nil
}

func isIdentByte(c byte, rest bool) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || rest && c >= '0' && c <= '9'
}

// skipString returns the index just past the string literal at s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		if s[j] == '\\' && q != '`' {
			j++
			continue
		}
		if s[j] == q {
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string in %q", s)
}

// matcherRE is one label matcher: name op "value".
var matcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`" + `)\s*$`)

// matcherLabels returns the label names of a matcher list (inside {…}).
func matcherLabels(body string) ([]string, error) {
	var out []string
	// Split on commas outside strings.
	var parts []string
	start := 0
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '"', '\'', '`':
			end, err := skipString(body, i)
			if err != nil {
				return nil, err
			}
			i = end - 1
		case ',':
			parts = append(parts, body[start:i])
			start = i + 1
		}
	}
	parts = append(parts, body[start:])
	for _, p := range parts {
		if strings.TrimSpace(p) == "" {
			continue
		}
		m := matcherRE.FindStringSubmatch(p)
		if m == nil {
			return nil, fmt.Errorf("bad label matcher %q", p)
		}
		out = append(out, m[1])
	}
	return out, nil
}

// refProblems lists every metric of expr that is not in the contract
// (histograms by their _bucket/_sum/_count series), is unimplemented, or is
// matched on a label it does not have; names are the contract rows used.
func refProblems(where, expr string, contract map[string]contractMetric) (names, problems []string) {
	refs, err := promqlRefs(expr)
	if err != nil {
		return nil, []string{fmt.Sprintf("%s: %v", where, err)}
	}
	for _, r := range refs {
		m, suffix, ok := contractFamily(contract, r.metric)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: metric %q is not in %s (expr %q)", where, r.metric, contractPath, expr))
			continue
		}
		if m.unimplemented {
			problems = append(problems, fmt.Sprintf("%s: metric %q is unimplemented: %s", where, r.metric, m.note))
		}
		have := map[string]bool{"__name__": true}
		for _, l := range m.labels {
			have[l] = true
		}
		if suffix == "_bucket" {
			have["le"] = true
		}
		for _, l := range r.labels {
			if !have[l] {
				problems = append(problems, fmt.Sprintf("%s: %s has no label %q (contract: %v)", where, r.metric, l, m.labels))
			}
		}
		names = append(names, m.name)
	}
	return names, problems
}

// checkRefs reports refProblems as test errors and returns the names.
func checkRefs(t *testing.T, where, expr string, contract map[string]contractMetric) []string {
	t.Helper()
	names, problems := refProblems(where, expr, contract)
	for _, p := range problems {
		t.Error(p)
	}
	return names
}

// TestDeployAlerts: the rule file is valid Prometheus rule groups naming
// only contract metrics, and covers the alerts issue 6 asks for.
func TestDeployAlerts(t *testing.T) {
	contract := loadContract(t)
	data, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("%s: %v", alertsPath, err)
	}
	if len(file.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	used := map[string]bool{}
	seen := map[string]bool{}
	for _, g := range file.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: a name and rules are required", g.Name)
		}
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert
			if r.Alert == "" || r.Record != "" {
				t.Errorf("%s: every rule is an alert", where)
			}
			if seen[r.Alert] {
				t.Errorf("%s: alert name repeats", where)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", where)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", where, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", where, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary annotation", where)
			}
			for _, n := range checkRefs(t, where, r.Expr, contract) {
				used[n] = true
			}
		}
	}
	// Issue 6: breaker open > 1 m, no ready replica, queue near capacity,
	// SLO attainment, error rate, backpressure spikes.
	for _, want := range []string{"breaker_state", "replica_ready", "queue_depth", "queue_capacity", "slo_attainment",
		"slo_objective_met", "admission_backpressure_events_total"} {
		if !used[want] {
			t.Errorf("no alert uses %s", want)
		}
	}
}

// TestDeployDashboard: the dashboard is valid Grafana JSON whose every
// query names only contract metrics, with the panels issue 6 asks for.
func TestDeployDashboard(t *testing.T) {
	contract := loadContract(t)
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title         string `json:"title"`
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []dashPanel `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if dash.Title == "" || dash.UID == "" || dash.SchemaVersion < 30 || len(dash.Panels) == 0 {
		t.Fatalf("dashboard header: title %q uid %q schemaVersion %d, %d panels", dash.Title, dash.UID, dash.SchemaVersion, len(dash.Panels))
	}
	used := map[string]bool{}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
			q.Query = s
		}
		for _, n := range checkRefs(t, "variable "+v.Name, q.Query, contract) {
			used[n] = true
		}
	}
	ids := map[int]bool{}
	titles := map[string]bool{}
	var walk func(ps []dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d repeats", p.ID)
			}
			ids[p.ID] = true
			titles[p.Title] = true
			if p.Type == "" || p.Title == "" || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %d %q: type %q, gridPos %+v", p.ID, p.Title, p.Type, p.GridPos)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refIDs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refIDs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q: target refId %q expr %q", p.Title, tg.RefID, tg.Expr)
				}
				refIDs[tg.RefID] = true
				for _, n := range checkRefs(t, "panel "+p.Title, tg.Expr, contract) {
					used[n] = true
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	// Issue 6: queue depth, breaker state, in-flight/slots, TTFT quantiles,
	// tokens/s, rejections, SLO attainment.
	for _, want := range []string{"queue_depth", "breaker_state", "replica_inflight", "replica_slots",
		"latency_first_token_ms", "tokens_out_total", "tasks_rejected_total", "slo_attainment"} {
		if !used[want] {
			t.Errorf("no panel queries %s", want)
		}
	}
	if !strings.Contains(string(data), "histogram_quantile(0.95, sum by (le") {
		t.Error("no TTFT quantile panel (histogram_quantile over latency_first_token_ms_bucket by le)")
	}
	var unused []string
	for name, m := range contract {
		if !m.unimplemented && !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	t.Logf("contract metrics with no panel: %v", unused)
}

// dashPanel is the part of a Grafana panel the test reads.
type dashPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a row's
}

// TestDeployPromQLNames: the scanner finds metrics and label matchers and
// rejects what is not in the contract (so the two tests above can fail).
func TestDeployPromQLNames(t *testing.T) {
	contract := loadContract(t)
	for _, c := range []struct {
		expr    string
		metrics string // comma-separated, in order
		bad     bool   // a contract violation
	}{
		{`histogram_quantile(0.95, sum by (le, pool_id) (rate(latency_first_token_ms_bucket{pool_id=~"$pool"}[$__rate_interval])))`, "latency_first_token_ms_bucket", false},
		{`sum by (pool_id) (queue_depth) / on (pool_id) max by (pool_id) (queue_capacity) > 0.9`, "queue_depth,queue_capacity", false},
		{`rate(x_total[5m] offset 1h) > 1e3 and rate(admission_backpressure_events_total[1h30m])`, "x_total,admission_backpressure_events_total", true},
		{`queue_depth{pool="a"}`, "queue_depth", true},
		{`tasks_canceled_total{reason!~"client|watchdog", pool_id="x,y"}`, "tasks_canceled_total", false},
		{`latency_decode_ms_sum / latency_decode_ms_count`, "latency_decode_ms_sum,latency_decode_ms_count", false},
		{`latency_decode_ms`, "latency_decode_ms", true}, // a histogram has no plain series
		{`model_state{state="Deprecated"} == 1`, "model_state", false},
		{`model_states == 1`, "model_states", true}, // not in the contract
		{`label_values(queue_depth, pool_id)`, "queue_depth", false},
		{`slo_objective_met{objective="errors"} == bool 0`, "slo_objective_met", false},
		{`max without (device) (gpu_utilization)`, "gpu_utilization", false},
	} {
		refs, err := promqlRefs(c.expr)
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		var got []string
		for _, r := range refs {
			got = append(got, r.metric)
		}
		if strings.Join(got, ",") != c.metrics {
			t.Errorf("%q: metrics %v, want %s", c.expr, got, c.metrics)
		}
		_, problems := refProblems("case", c.expr, contract)
		if bad := len(problems) > 0; bad != c.bad {
			t.Errorf("%q: contract violation %v, want %v", c.expr, bad, c.bad)
		}
	}
	for _, bad := range []string{`sum(rate(x[5m])`, `rate(x[5m]))`, `x{a="b}`, `x{a}`, `sum by queue_depth`} {
		if _, err := promqlRefs(bad); err == nil {
			t.Errorf("%q: no syntax error", bad)
		}
	}
}

// FuzzDeployPromQLNames: the scanner never panics or loops, and every
// metric it reports is a valid metric name.
func FuzzDeployPromQLNames(f *testing.F) {
	for _, s := range []string{
		`max by (pool_id, replica_id) (breaker_state) == 2`,
		`sum by (engine) (rate(tasks_rejected_total{reason!~"unauthorized|forbidden"}[5m])) / sum by (engine) (rate(tasks_enqueued_total[5m]))`,
		`rate(admission_backpressure_events_total[1h] offset 5m)`,
		`label_values(queue_depth{engine="vllm"}, pool_id)`,
		`{__name__=~"slo_.*"}`,
		`x{a="\"}"}[5m:1m]`,
		`${pool} $__rate_interval`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		refs, err := promqlRefs(expr)
		if err != nil {
			return
		}
		for _, r := range refs {
			if !metricNameOK(r.metric) {
				t.Fatalf("%q: metric %q", expr, r.metric)
			}
		}
	})
}
