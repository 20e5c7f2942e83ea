package config

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/invopop/jsonschema"
)

// Schema returns the JSON Schema of the config file (`orchd schema`),
// generated from Config: every key documented with its meaning and default,
// enums listed, and additionalProperties false on every object, as strict
// mode enforces.
func Schema() ([]byte, error) {
	r := jsonschema.Reflector{
		FieldNameTag:               "yaml",
		RequiredFromJSONSchemaTags: true, // every other key has a default
		ExpandedStruct:             true,
		BaseSchemaID:               "https://github.com/llama-orch/llama-orch/gateway/config",
	}
	s := r.Reflect(&Config{})
	s.Title = "orchd configuration"
	s.Description = "Configuration of orchd, the llama-orch gateway (SPEC §13). YAML; every key is optional unless marked required and takes the documented default."
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // descriptions hold <key> and >
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("cannot encode config schema: %w", err)
	}
	return b.Bytes(), nil
}
