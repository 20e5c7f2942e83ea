package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a config: a path such as
// `pools[1].replicas[0].url`, the line in the file when known (0 otherwise),
// and a message. Warnings (compat mode's unknown keys) do not make a config
// invalid.
type Problem struct {
	Path    string
	Line    int
	Message string
	Warning bool
}

// String renders `[warning: ]path: message (line N)`.
func (p Problem) String() string {
	var b strings.Builder
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	if p.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", p.Line)
	}
	return b.String()
}

// HasErrors reports whether any problem is not a warning.
func HasErrors(ps []Problem) bool {
	for _, p := range ps {
		if !p.Warning {
			return true
		}
	}
	return false
}

// Load reads and parses the config file at path (see Parse).
func Load(path string) (*Config, []Problem, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read config: %w", err)
	}
	return Parse(data)
}

// Parse decodes a YAML (or JSON) config on top of the defaults. The error is
// non-nil only when data is not YAML at all; then the config is nil.
// Otherwise the config is decoded as far as possible and the problems list
// every unknown key (an error in strict mode, a warning in compat mode), every
// value of the wrong type and every duplicated key, each with its path and
// line. Parse does not judge values: call Validate (or use Check).
func Parse(data []byte) (*Config, []Problem, error) {
	c, ps, _, err := parse(data)
	return c, ps, err
}

// Check is Parse followed by ValidateOpts, with the line of each semantic
// problem filled in from the file. It is what `orchd validate` reports.
func Check(data []byte, o ValidateOptions) (*Config, []Problem, error) {
	c, ps, lines, err := parse(data)
	if err != nil {
		return nil, nil, err
	}
	vs := ValidateOpts(c, o)
	for i := range vs {
		vs[i].Line = lines.find(vs[i].Path)
	}
	ps = append(ps, vs...)
	sortProblems(ps)
	return c, ps, nil
}

// CheckFile reads the file at path and runs Check on it.
func CheckFile(path string, o ValidateOptions) (*Config, []Problem, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read config: %w", err)
	}
	return Check(data, o)
}

// lineTable maps config paths to the line of their value in the file.
type lineTable map[string]int

// find returns the line of path, or of its nearest ancestor present in the
// file (a missing key is reported where its parent is).
func (t lineTable) find(path string) int {
	for path != "" {
		if l, ok := t[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

func parse(data []byte) (*Config, []Problem, lineTable, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // empty file: every default, no pools
			c := Default()
			return &c, nil, lineTable{}, nil
		}
		return nil, nil, nil, fmt.Errorf("cannot parse YAML: %w", err)
	}
	var ps []Problem
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		ps = append(ps, Problem{Line: extra.Line, Message: "a second YAML document; a config file holds exactly one"})
	} else if !errors.Is(err, io.EOF) {
		return nil, nil, nil, fmt.Errorf("cannot parse YAML: %w", err)
	}

	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	w := walker{strict: configMode(root) != ModeCompat, lines: lineTable{}, seen: map[seenKey]bool{}}
	w.walk(root, reflect.TypeOf(Config{}), "")
	ps = append(ps, w.problems...)

	c := Default()
	if err := root.Decode(&c); err != nil {
		// The walker checks everything the decoder does, so this only
		// reports what it may have missed, without a path.
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, nil, nil, fmt.Errorf("cannot decode config: %w", err)
		}
		if !HasErrors(w.problems) {
			for _, msg := range te.Errors {
				ps = append(ps, Problem{Line: lineOf(msg), Message: msg})
			}
		}
	}
	for i := range c.Auth.Keys {
		c.Auth.Keys[i].KeySHA256 = strings.ToLower(c.Auth.Keys[i].KeySHA256)
	}
	if len(c.Catalog.TrustedKeys) == 0 {
		c.Catalog.TrustedKeys = nil // `[]` and absent are the same
	}
	return &c, ps, w.lines, nil
}

var yamlLineRe = regexp.MustCompile(`^line (\d+):`)

func lineOf(msg string) int {
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// configMode reads the top-level config_mode before the walk, since it decides
// how the walk treats unknown keys. An invalid value is left to Validate and
// treated as strict here.
func configMode(root *yaml.Node) string {
	root = resolve(root)
	if root.Kind != yaml.MappingNode {
		return ModeStrict
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "config_mode" {
			if v := resolve(root.Content[i+1]); v.Kind == yaml.ScalarNode {
				return v.Value
			}
		}
	}
	return ModeStrict
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// walker checks a YAML node tree against a Go type by reflection: unknown and
// duplicated keys, and values the decoder could not put in their field. It
// also drops null-valued keys so that `key:` means "use the default", and
// records the line of every path for Check.
type walker struct {
	strict   bool
	problems []Problem
	lines    lineTable
	seen     map[seenKey]bool // nodes already checked
	budget   int              // nodes walked; bounds alias blow-ups
}

type seenKey struct {
	n *yaml.Node
	t reflect.Type
}

const maxWalk = 1 << 20

func (w *walker) add(path string, line int, format string, args ...any) {
	w.problems = append(w.problems, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// walk checks n against type t. It returns false when n itself cannot be
// decoded as t; the caller then drops it, so the decoder never fails and every
// other value still lands in its field.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return false
		}
		return w.walk(n.Alias, t, path)
	}
	k := seenKey{n, t}
	if ok, seen := w.seen[k]; seen {
		return ok // an anchored node used again: checked where first used
	}
	w.seen[k] = true // in progress: a node merging itself stops here
	ok := w.check(n, t, path)
	w.seen[k] = ok
	return ok
}

func (w *walker) check(n *yaml.Node, t reflect.Type, path string) bool {
	if w.budget++; w.budget > maxWalk {
		if w.budget == maxWalk+1 {
			w.add(path, n.Line, "document too large or too deeply aliased")
		}
		return false
	}
	if path != "" {
		if _, ok := w.lines[path]; !ok {
			w.lines[path] = n.Line
		}
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		return true // the zero value
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.add(path, n.Line, "expected a mapping, got %s", describe(n))
			return false
		}
		w.mapping(n, t, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.add(path, n.Line, "expected a list, got %s", describe(n))
			return false
		}
		et := t.Elem()
		for i, e := range n.Content {
			ep := fmt.Sprintf("%s[%d]", path, i)
			if isNull(e) && et.Kind() == reflect.Struct {
				w.add(ep, e.Line, "empty list entry")
				continue
			}
			if !w.walk(e, et, ep) {
				// Keep the indexes of later entries: put an empty value in.
				n.Content[i] = emptyLike(et, e.Line)
			}
		}
	default:
		return w.scalar(n, t, path)
	}
	return true
}

func emptyLike(t reflect.Type, line int) *yaml.Node {
	if t.Kind() == reflect.Struct {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: line}
}

// mapping checks one mapping against struct type t, dropping the pairs the
// decoder must not see: unknown, duplicated, null (= default) and ill-typed.
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	keys := map[string]int{}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if w.merge(v, t, path) {
				kept = append(kept, k, v)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.add(path, k.Line, "keys must be plain strings, got %s", describe(k))
			continue
		}
		kp := joinPath(path, k.Value)
		if first, dup := keys[k.Value]; dup {
			w.add(kp, k.Line, "duplicate key (first at line %d)", first)
			continue
		}
		keys[k.Value] = k.Line
		ft, ok := fields[k.Value]
		if !ok {
			if w.strict {
				w.add(kp, k.Line, "unknown field")
			} else {
				w.problems = append(w.problems, Problem{Path: kp, Line: k.Line, Message: "unknown field, ignored (config_mode: compat)", Warning: true})
			}
			continue
		}
		if isNull(v) {
			w.lines[kp] = k.Line
			continue // an empty value means the default
		}
		if w.walk(v, ft, kp) {
			kept = append(kept, k, v)
		}
	}
	n.Content = kept
}

// merge checks the value of a merge key (`<<: *base` or `<<: [*a, *b]`):
// merged mappings are checked on their own, since the merging mapping's keys
// override theirs.
func (w *walker) merge(v *yaml.Node, t reflect.Type, path string) bool {
	v = resolve(v)
	srcs := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		srcs = srcs[:0]
		for _, s := range v.Content {
			srcs = append(srcs, resolve(s))
		}
	}
	ok := true
	for _, s := range srcs {
		if s.Kind != yaml.MappingNode {
			w.add(path, s.Line, "merge (<<) needs a mapping, got %s", describe(s))
			ok = false
			continue
		}
		w.walk(s, t, path)
	}
	return ok
}

func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind != yaml.ScalarNode {
		w.add(path, n.Line, "expected %s, got %s", kindName(t), describe(n))
		return false
	}
	if t.Kind() == reflect.String {
		return true // the decoder takes any scalar as a string
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil || !integral(n, t) {
		w.add(path, n.Line, "expected %s, got %s", kindName(t), describe(n))
		return false
	}
	return true
}

// integral reports whether n fits an integer field without losing a
// fraction: the decoder would silently truncate 1.5 to 1.
func integral(n *yaml.Node, t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
	default:
		return true
	}
	if n.ShortTag() != "!!float" {
		return true
	}
	var f float64
	if err := n.Decode(&f); err != nil {
		return false
	}
	return f == math.Trunc(f) && !math.IsInf(f, 0)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		switch n.ShortTag() {
		case "!!str":
			return "string " + strconv.Quote(v)
		case "!!int":
			return "integer " + v
		case "!!float":
			return "number " + v
		case "!!bool":
			return "boolean " + v
		}
		return strconv.Quote(v)
	}
	return "nothing"
}

// yamlFields maps the yaml key names of struct type t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// YAMLKeys lists every key path of the config shape, lists written as `[]`
// (e.g. `pools[].queue.capacity`), in field order. Tests and docs use it to
// check that nothing is undocumented.
func YAMLKeys() []string {
	var out []string
	var rec func(t reflect.Type, prefix string)
	rec = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			if t.Kind() == reflect.Slice {
				if t.Elem().Kind() != reflect.Struct {
					return
				}
				prefix += "[]"
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		names := make([]string, 0, t.NumField())
		types := yamlFields(t)
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			names = append(names, name)
		}
		for _, name := range names {
			p := joinPath(prefix, name)
			out = append(out, p)
			rec(types[name], p)
		}
	}
	rec(reflect.TypeOf(Config{}), "")
	return out
}

// sortProblems orders problems by line, then path (unknown lines last).
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		li, lj := ps[i].Line, ps[j].Line
		if (li == 0) != (lj == 0) {
			return lj == 0
		}
		return li < lj
	})
}
