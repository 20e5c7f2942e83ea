package catalog

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"strings"
	"unicode/utf8"
)

// Field bounds.
const (
	idMax   = 128
	refMax  = 4096
	sbomMax = 1 << 20
)

// engines lists the engine names an entry may carry.
var engines = []string{"llamacpp", "vllm", "tgi", "triton"}

// validateRegistration checks every field of r and normalises its SBOM
// (compacted; JSON null = none).
func validateRegistration(r *Registration) *Error {
	if err := validateID(r.ID); err != nil {
		return errf(KindInvalid, "id: %v", err)
	}
	if err := validateRef(r.Ref); err != nil {
		return errf(KindInvalid, "ref: %v", err)
	}
	if r.Digest != "" {
		if err := validateDigest(r.Digest); err != nil {
			return errf(KindInvalid, "digest: %v", err)
		}
	}
	if r.Signature != "" {
		if _, err := decodeSignature(r.Signature); err != nil {
			return errf(KindInvalid, "signature: %v", err)
		}
	}
	sbom, err := normalizeSBOM(r.SBOM)
	if err != nil {
		return errf(KindInvalid, "sbom: %v", err)
	}
	r.SBOM = sbom
	if err := validateEngine(r.Engine); err != nil {
		return errf(KindInvalid, "engine: %v", err)
	}
	return nil
}

// validateID enforces ^[A-Za-z0-9._:/-]{1,128}$.
func validateID(id string) error {
	if id == "" {
		return fmt.Errorf("is required")
	}
	if len(id) > idMax {
		return fmt.Errorf("is %d bytes long, at most %d", len(id), idMax)
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case b == '.' || b == '_' || b == ':' || b == '/' || b == '-':
		default:
			return fmt.Errorf("%q: byte %d is not one of A-Z a-z 0-9 . _ : / -", id, i)
		}
	}
	return nil
}

// validateRef accepts /abs/path, file:///abs/path (host empty or localhost)
// and http(s)://host/... without credentials (they would be persisted and shown).
func validateRef(ref string) error {
	switch {
	case ref == "":
		return fmt.Errorf("is required")
	case len(ref) > refMax:
		return fmt.Errorf("is %d bytes long, at most %d", len(ref), refMax)
	case !utf8.ValidString(ref):
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, r := range ref {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("contains a control character")
		}
	}
	if strings.HasPrefix(ref, "/") {
		return nil
	}
	u, err := url.Parse(ref)
	if err != nil {
		return fmt.Errorf("must be /abs/path, file:///abs/path or an http(s) URL: %v", err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("file URL host %q: only local files can be read", u.Host)
		}
		if u.Opaque != "" || !path.IsAbs(u.Path) {
			return fmt.Errorf("file URL must hold an absolute path (file:///abs/path)")
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("file URL must not have a query or fragment")
		}
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("URL has no host")
		}
		if u.User != nil {
			return fmt.Errorf("URL must not carry credentials")
		}
	default:
		return fmt.Errorf("must be /abs/path, file:///abs/path or an http(s) URL")
	}
	return nil
}

// isHTTPRef reports whether a valid ref is an http(s) URL.
func isHTTPRef(ref string) bool {
	if strings.HasPrefix(ref, "/") {
		return false
	}
	u, err := url.Parse(ref)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https")
}

// filePath returns the local path of a valid file ref.
func filePath(ref string) string {
	if strings.HasPrefix(ref, "/") {
		return ref
	}
	u, err := url.Parse(ref)
	if err != nil {
		return ref
	}
	return u.Path
}

const digestPrefix = "sha256:"

// validateDigest enforces "sha256:" + 64 lowercase hex digits.
func validateDigest(d string) error {
	hex, ok := strings.CutPrefix(d, digestPrefix)
	if !ok || len(hex) != 64 {
		return fmt.Errorf("%.80q: must be sha256:<64 lowercase hex digits>", d)
	}
	for i := 0; i < len(hex); i++ {
		if b := hex[i]; !('0' <= b && b <= '9' || 'a' <= b && b <= 'f') {
			return fmt.Errorf("%.80q: must be sha256:<64 lowercase hex digits>", d)
		}
	}
	return nil
}

// validateEngine accepts "" or one of engines.
func validateEngine(e string) error {
	if e == "" {
		return nil
	}
	for _, n := range engines {
		if e == n {
			return nil
		}
	}
	return fmt.Errorf("%.40q: must be one of %s", e, strings.Join(engines, "|"))
}

// normalizeSBOM checks the size and JSON validity of an SBOM and returns it
// compacted (so it reads the same after a persistence round trip); JSON null
// and nothing both mean "no SBOM".
func normalizeSBOM(s json.RawMessage) (json.RawMessage, error) {
	if len(s) > sbomMax {
		return nil, fmt.Errorf("is %d bytes, at most %d", len(s), sbomMax)
	}
	if len(bytes.TrimSpace(s)) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, s); err != nil {
		return nil, fmt.Errorf("is not valid JSON: %v", err)
	}
	if buf.String() == "null" {
		return nil, nil
	}
	return buf.Bytes(), nil
}

// validateKeyID enforces 16 lowercase hex digits.
func validateKeyID(id string) error {
	if len(id) != 16 {
		return fmt.Errorf("%.40q: must be 16 lowercase hex digits", id)
	}
	for i := 0; i < len(id); i++ {
		if b := id[i]; !('0' <= b && b <= '9' || 'a' <= b && b <= 'f') {
			return fmt.Errorf("%.40q: must be 16 lowercase hex digits", id)
		}
	}
	return nil
}

// decodeSignature decodes a standard base64 ed25519 signature.
func decodeSignature(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("is not standard base64")
	}
	if len(b) != ed25519.SignatureSize {
		return nil, fmt.Errorf("decodes to %d bytes, an ed25519 signature has %d", len(b), ed25519.SignatureSize)
	}
	return b, nil
}
