package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
)

// fileVersion is the version of the persisted format.
const fileVersion = 1

// file is the persisted form: {"version":1,"models":[Entry...]}.
type file struct {
	Version int     `json:"version"`
	Models  []Entry `json:"models"`
}

// load reads the catalog at path; a missing file is an empty catalog.
func load(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: cannot read %s: %w", path, err)
	}
	entries, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", path, err)
	}
	return entries, nil
}

// decode parses a persisted catalog strictly: unknown fields, trailing data,
// another version, duplicate ids and invalid entries are errors. The entries
// are normalised (times in UTC, SBOM compacted, history non-nil and bounded).
func decode(data []byte) ([]Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("invalid catalog JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("invalid catalog JSON: data after the catalog object")
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("version %d: only version %d is understood", f.Version, fileVersion)
	}
	seen := make(map[string]bool, len(f.Models))
	for i := range f.Models {
		e := &f.Models[i]
		if err := normalizeEntry(e); err != nil {
			return nil, fmt.Errorf("models[%d] (%.140q): %w", i, e.ID, err)
		}
		if seen[e.ID] {
			return nil, fmt.Errorf("models[%d]: id %q appears twice", i, e.ID)
		}
		seen[e.ID] = true
	}
	return f.Models, nil
}

// normalizeEntry validates a loaded entry and normalises it in place.
func normalizeEntry(e *Entry) error {
	if err := validateID(e.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if err := validateRef(e.Ref); err != nil {
		return fmt.Errorf("ref: %w", err)
	}
	if e.Digest != "" {
		if err := validateDigest(e.Digest); err != nil {
			return fmt.Errorf("digest: %w", err)
		}
	}
	if e.Signature != "" {
		if _, err := decodeSignature(e.Signature); err != nil {
			return fmt.Errorf("signature: %w", err)
		}
	}
	if err := validateEngine(e.Engine); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	sbom, err := normalizeSBOM(e.SBOM)
	if err != nil {
		return fmt.Errorf("sbom: %w", err)
	}
	e.SBOM = sbom
	if _, ok := transitions[e.State]; !ok {
		return fmt.Errorf("state %.40q: must be one of %s", e.State, joinStates(States))
	}
	if e.SessionsUntil != nil {
		if e.State != Deprecated {
			return fmt.Errorf("sessions_until is set but the state is %s, not Deprecated", e.State)
		}
		if err := normTime("sessions_until", e.SessionsUntil); err != nil {
			return err
		}
	}
	if v := e.Verification; v != nil {
		if err := normalizeVerification(v); err != nil {
			return fmt.Errorf("verification: %w", err)
		}
	}
	for i := range e.History {
		t := &e.History[i]
		if _, ok := transitions[t.From]; !ok {
			return fmt.Errorf("history[%d].from %.40q: not a state", i, t.From)
		}
		if _, ok := transitions[t.To]; !ok {
			return fmt.Errorf("history[%d].to %.40q: not a state", i, t.To)
		}
		if t.DeadlineMs < 0 {
			return fmt.Errorf("history[%d].deadline_ms %d: must not be negative", i, t.DeadlineMs)
		}
		if err := normTime(fmt.Sprintf("history[%d].at", i), &t.At); err != nil {
			return err
		}
	}
	if n := len(e.History); n > historyMax {
		e.History = slices.Clone(e.History[n-historyMax:])
	}
	if e.History == nil {
		e.History = []Transition{}
	}
	if err := normTime("created_at", &e.CreatedAt); err != nil {
		return err
	}
	return normTime("updated_at", &e.UpdatedAt)
}

func normalizeVerification(v *Verification) error {
	switch v.Result {
	case resultPass:
		if v.Reason != ReasonOK {
			return fmt.Errorf("result pass with reason %.40q", v.Reason)
		}
	case resultFail:
		if v.Reason == ReasonOK || !slices.Contains(reasons, v.Reason) {
			return fmt.Errorf("result fail with reason %.40q", v.Reason)
		}
	default:
		return fmt.Errorf("result %.40q: must be pass or fail", v.Result)
	}
	if v.ResolvedDigest != "" {
		if err := validateDigest(v.ResolvedDigest); err != nil {
			return fmt.Errorf("resolved_digest: %w", err)
		}
	}
	if v.KeyID != "" {
		if err := validateKeyID(v.KeyID); err != nil {
			return fmt.Errorf("key_id: %w", err)
		}
	}
	if v.Bytes < 0 {
		return fmt.Errorf("bytes %d: must not be negative", v.Bytes)
	}
	return normTime("at", &v.At)
}

// normTime converts *t to UTC, the form every stored time takes, and checks
// that it can be written back (RFC 3339 years 0000-9999).
func normTime(field string, t *time.Time) error {
	u := t.UTC()
	if y := u.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("%s %s: the year in UTC is outside 0000-9999", field, t.Format(time.RFC3339))
	}
	*t = u
	return nil
}

// save writes the whole catalog to c.path atomically. c.mu must be held.
func (c *Catalog) save() error {
	if c.path == "" {
		return nil
	}
	data, err := c.encode()
	if err != nil {
		return err
	}
	return writeFileAtomic(c.path, data)
}

// encode renders the catalog in its persisted form. c.mu must be held.
func (c *Catalog) encode() ([]byte, error) {
	f := file{Version: fileVersion, Models: make([]Entry, 0, len(c.records))}
	for _, rec := range c.records {
		f.Models = append(f.Models, rec.e)
	}
	sort.Slice(f.Models, func(i, j int) bool { return f.Models[i].ID < f.Models[j].ID })
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep SBOM bytes as registered
	enc.SetIndent("", "  ")
	if err := enc.Encode(&f); err != nil {
		return nil, fmt.Errorf("cannot encode the catalog: %w", err)
	}
	return buf.Bytes(), nil
}

// writeFileAtomic replaces path with data: a 0600 temp file in the same
// directory, written and fsynced, then renamed over path (and the directory
// fsynced so the rename survives a crash). On error path is untouched.
func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // best effort: the data itself is already durable
		d.Close()
	}
	return nil
}
