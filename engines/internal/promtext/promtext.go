// Package promtext reads samples from the Prometheus text exposition format
// that engines serve on /metrics. Adapters need a handful of gauges from a
// periodic scrape, off the request path; this reader is small, allocation
// free and tolerant (a line it cannot read is skipped), which is all that
// needs — prometheus/common's expfmt would add protobuf and full families
// for no gain here.
package promtext

import (
	"bytes"
	"strconv"
)

// Each calls fn for every sample line of data: the metric name, the raw
// label block (between the braces, "" when none) and the value. Comments,
// blank lines and unreadable lines are skipped; timestamps are ignored.
// name and labels are valid only during the call.
func Each(data []byte, fn func(name, labels []byte, value float64)) {
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		name, labels, rest, ok := split(line)
		if !ok {
			continue
		}
		rest = bytes.TrimLeft(rest, " \t")
		if i := bytes.IndexAny(rest, " \t"); i >= 0 {
			rest = rest[:i] // a timestamp follows
		}
		v, err := strconv.ParseFloat(string(rest), 64)
		if err != nil {
			continue
		}
		fn(name, labels, v)
	}
}

// split cuts a sample line into name, label block and the rest.
func split(line []byte) (name, labels, rest []byte, ok bool) {
	i := bytes.IndexAny(line, "{ \t")
	if i <= 0 {
		return nil, nil, nil, false
	}
	name = line[:i]
	if line[i] != '{' {
		return name, nil, line[i:], true
	}
	// Find the closing brace outside quoted values.
	inQuote := false
	for j := i + 1; j < len(line); j++ {
		switch c := line[j]; {
		case inQuote && c == '\\':
			j++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return name, line[i+1 : j], line[j+1:], true
		}
	}
	return nil, nil, nil, false
}

// Label returns the (unescaped) value of key in a label block from Each.
func Label(labels []byte, key string) (string, bool) {
	for len(labels) > 0 {
		labels = bytes.TrimLeft(labels, " ,\t")
		eq := bytes.IndexByte(labels, '=')
		if eq < 0 || eq+1 >= len(labels) || labels[eq+1] != '"' {
			return "", false
		}
		k := bytes.TrimSpace(labels[:eq])
		var val []byte
		esc := false
		j := eq + 2
		for ; j < len(labels); j++ {
			c := labels[j]
			if c == '\\' && j+1 < len(labels) {
				esc = true
				j++
				continue
			}
			if c == '"' {
				break
			}
		}
		if j >= len(labels) {
			return "", false
		}
		val = labels[eq+2 : j]
		if string(k) == key {
			if !esc {
				return string(val), true
			}
			return unescape(val), true
		}
		labels = labels[j+1:]
	}
	return "", false
}

func unescape(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			i++
			switch b[i] {
			case 'n':
				out = append(out, '\n')
			default:
				out = append(out, b[i])
			}
			continue
		}
		out = append(out, b[i])
	}
	return string(out)
}
