package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

func cmdDrain(ctx context.Context, c *command) error {
	deadline := c.fs.Duration("deadline", -1, "how long in-flight work may finish before it is canceled, e.g. 30s (required; 0 cancels it at once)")
	pos, err := c.parse()
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return &usageError{msg: "want exactly one POOL, got " + fmt.Sprint(len(pos))}
	case *deadline < 0 && !flagSet(c, "deadline"):
		return &usageError{msg: "--deadline is required"}
	case *deadline < 0:
		return &usageError{msg: "--deadline must not be negative"}
	}
	if err := c.connect(); err != nil {
		return err
	}
	pool := pos[0]
	body, _ := json.Marshal(map[string]int64{"deadline_ms": ceilMs(*deadline)})
	r, err := c.client.call(ctx, "drain "+pool, http.MethodPost, "/v1/pools/"+url.PathEscape(pool)+"/drain",
		"application/json", body, callTimeout)
	if err != nil {
		return err
	}
	var v struct {
		Already    bool   `json:"already"`
		DeadlineMs *int64 `json:"deadline_ms"`
	}
	_ = json.Unmarshal(r.body, &v) // the 2xx is the answer; the body only adds detail
	if v.Already {
		_, err = fmt.Fprintf(c.stdout, "drain of pool %s accepted: it was already draining (the first drain's deadline stands)\n", pool)
		return err
	}
	d := *deadline
	if v.DeadlineMs != nil {
		d = time.Duration(*v.DeadlineMs) * time.Millisecond
	}
	_, err = fmt.Fprintf(c.stdout, "drain of pool %s accepted: no new admissions; in-flight work is canceled if not done within %s\n", pool, d)
	return err
}

// ceilMs converts d to whole milliseconds, rounding up so that a positive
// deadline never becomes "cancel at once".
func ceilMs(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(c *command, name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// replicaFlags collects repeated --replica ID=URL.
type replicaFlags []replicaRef

type replicaRef struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

func (r *replicaFlags) String() string {
	parts := make([]string, len(*r))
	for i, x := range *r {
		parts[i] = x.ID + "=" + x.URL
	}
	return strings.Join(parts, ",")
}

func (r *replicaFlags) Set(s string) error {
	x, err := parseReplica(s)
	if err != nil {
		return err
	}
	for _, y := range *r {
		if y.ID == x.ID {
			return fmt.Errorf("replica %q given twice", x.ID)
		}
	}
	*r = append(*r, x)
	return nil
}

// parseReplica parses ID=URL, where URL is an absolute http(s) URL.
func parseReplica(s string) (replicaRef, error) {
	id, u, ok := strings.Cut(s, "=")
	id, u = strings.TrimSpace(id), strings.TrimSpace(u)
	if !ok || id == "" || u == "" {
		return replicaRef{}, errors.New("want ID=URL, e.g. r0=http://127.0.0.1:18081")
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return replicaRef{}, fmt.Errorf("replica %s: URL must be absolute http(s), got %q", id, u)
	}
	return replicaRef{ID: id, URL: u}, nil
}

func cmdReload(ctx context.Context, c *command) error {
	model := c.fs.String("model", "", "model the pool serves after the reload; every replica must report it (required)")
	var reps replicaFlags
	c.fs.Var(&reps, "replica", "new replica as ID=URL, repeated for each (default: the current replicas)")
	timeout := c.fs.Duration("timeout", 0, "how long orchd waits for every replica to be healthy and report the model (default: orchd's, 30s)")
	pos, err := c.parse()
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return &usageError{msg: "want exactly one POOL, got " + fmt.Sprint(len(pos))}
	case strings.TrimSpace(*model) == "":
		return &usageError{msg: "--model is required"}
	case *timeout < 0 || (*timeout == 0 && flagSet(c, "timeout")):
		return &usageError{msg: "--timeout must be positive"}
	}
	if err := c.connect(); err != nil {
		return err
	}
	pool := pos[0]
	req := struct {
		NewModelRef string       `json:"new_model_ref"`
		Replicas    []replicaRef `json:"replicas,omitempty"`
		TimeoutMs   int64        `json:"timeout_ms,omitempty"`
	}{NewModelRef: *model, Replicas: reps, TimeoutMs: ceilMs(*timeout)}
	body, _ := json.Marshal(req)
	// The reload is synchronous: orchd answers once verified or timed out.
	wait := 30 * time.Second
	if *timeout > 0 {
		wait = *timeout
	}
	r, err := c.client.call(ctx, "reload "+pool, http.MethodPost, "/v1/pools/"+url.PathEscape(pool)+"/reload",
		"application/json", body, wait+callTimeout)
	var se *statusError
	if errors.As(err, &se) && se.status == http.StatusConflict && se.parsed {
		fmt.Fprintf(c.stderr, "orchctl: reload of pool %s refused, nothing changed: %s\n", pool, oneLine(se.env.Message))
		return errReported
	}
	if err != nil {
		return err
	}
	var set replicaSet
	if err := json.Unmarshal(r.body, &set); err != nil {
		return fmt.Errorf("reload %s: orchd reloaded the pool but its answer cannot be decoded: %w", pool, err)
	}
	fmt.Fprintf(c.stdout, "pool %s reloaded: now serving model %s\n\n", pool, cell(set.Model))
	return writeStatus(c.stdout, []replicaSet{set})
}
