package features

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/cucumber/godog"
)

// Steps of the model catalog and lifecycle (SPEC §9). Artifacts are real
// files in a temporary directory; signatures are real ed25519 signatures
// over the digest string, by a key the gateway's config trusts (or by one it
// does not). Request bodies name them with placeholders the steps expand:
// <path of a>, <digest of a>, <signature of a>, <untrusted signature of a>.

// catalogState is a scenario's catalog material.
type catalogState struct {
	dir       string
	trusted   ed25519.PrivateKey
	untrusted ed25519.PrivateKey
	artifacts map[string]string // name → file path
}

func initCatalogSteps(sc *godog.ScenarioContext, w *world) {
	sc.Step(`^the catalog's trust policy is (strict|permissive) with a trusted signing key$`, w.givenCatalogPolicy)
	sc.Step(`^an artifact "(\w+)" holding "([^"]*)"$`, w.givenArtifact)
	sc.Step(`^artifact "(\w+)" now holds "([^"]*)"$`, w.rewriteArtifact)
	sc.Step(`^I POST "([^"]*)" with the catalog body (\{.*\}) and key "([^"]*)"$`, w.postCatalogBody)
}

func (w *world) catalog() (*catalogState, error) {
	if w.cat != nil {
		return w.cat, nil
	}
	dir, err := os.MkdirTemp("", "orch-catalog-")
	if err != nil {
		return nil, err
	}
	_, trusted, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	_, untrusted, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	w.cat = &catalogState{dir: dir, trusted: trusted, untrusted: untrusted, artifacts: map[string]string{}}
	return w.cat, nil
}

func (w *world) givenCatalogPolicy(policy string) error {
	if err := w.configurable(); err != nil {
		return err
	}
	c, err := w.catalog()
	if err != nil {
		return err
	}
	pub := base64.StdEncoding.EncodeToString(c.trusted.Public().(ed25519.PublicKey))
	w.topExtra = append(w.topExtra, fmt.Sprintf("catalog: { path: %q, trust_policy: %s, trusted_keys: [%q] }",
		filepath.Join(c.dir, "catalog.json"), policy, pub))
	return nil
}

func (w *world) givenArtifact(name, content string) error {
	c, err := w.catalog()
	if err != nil {
		return err
	}
	p := filepath.Join(c.dir, name+".gguf")
	c.artifacts[name] = p
	return os.WriteFile(p, []byte(content), 0o600)
}

func (w *world) rewriteArtifact(name, content string) error {
	if w.cat == nil || w.cat.artifacts[name] == "" {
		return fmt.Errorf("no artifact %q", name)
	}
	return os.WriteFile(w.cat.artifacts[name], []byte(content), 0o600)
}

var placeholder = regexp.MustCompile(`<(path|digest|signature|untrusted signature) of (\w+)>`)

// expand replaces the artifact placeholders of body.
func (w *world) expand(body string) (string, error) {
	var err error
	out := placeholder.ReplaceAllStringFunc(body, func(m string) string {
		sm := placeholder.FindStringSubmatch(m)
		if w.cat == nil || w.cat.artifacts[sm[2]] == "" {
			err = fmt.Errorf("no artifact %q", sm[2])
			return m
		}
		p := w.cat.artifacts[sm[2]]
		data, rerr := os.ReadFile(p)
		if rerr != nil {
			err = rerr
			return m
		}
		sum := sha256.Sum256(data)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		switch sm[1] {
		case "path":
			return p
		case "digest":
			return digest
		case "signature":
			return base64.StdEncoding.EncodeToString(ed25519.Sign(w.cat.trusted, []byte(digest)))
		default:
			return base64.StdEncoding.EncodeToString(ed25519.Sign(w.cat.untrusted, []byte(digest)))
		}
	})
	return out, err
}

func (w *world) postCatalogBody(path, body, key string) error {
	b, err := w.expand(body)
	if err != nil {
		return err
	}
	if strings.Contains(b, "<") {
		return fmt.Errorf("unexpanded placeholder in %s", b)
	}
	return w.postBodyWithKey(path, b, key)
}
