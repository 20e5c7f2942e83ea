package config

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// schemaDoc is the part of a JSON Schema the tests read.
type schemaDoc struct {
	Ref                  string                `json:"$ref"`
	Type                 string                `json:"type"`
	Description          string                `json:"description"`
	Properties           map[string]*schemaDoc `json:"properties"`
	Items                *schemaDoc            `json:"items"`
	AdditionalProperties *bool                 `json:"additionalProperties"`
	Enum                 []any                 `json:"enum"`
	Defs                 map[string]*schemaDoc `json:"$defs"`
	Required             []string              `json:"required"`
}

func loadSchema(t *testing.T) *schemaDoc {
	t.Helper()
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var s schemaDoc
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	return &s
}

// deref follows a `#/$defs/X` reference.
func (root *schemaDoc) deref(t *testing.T, s *schemaDoc) *schemaDoc {
	t.Helper()
	if s.Ref == "" {
		return s
	}
	d := root.Defs[strings.TrimPrefix(s.Ref, "#/$defs/")]
	if d == nil {
		t.Fatalf("dangling $ref %s", s.Ref)
	}
	return d
}

func TestSchemaObjectsClosed(t *testing.T) {
	// Every object of the schema forbids unknown keys, as strict mode does.
	root := loadSchema(t)
	var check func(name string, s *schemaDoc)
	check = func(name string, s *schemaDoc) {
		if s.Type == "object" || s.Properties != nil {
			if s.AdditionalProperties == nil || *s.AdditionalProperties {
				t.Errorf("%s: additionalProperties is not false", name)
			}
		}
		for k, p := range s.Properties {
			check(name+"."+k, p)
		}
		if s.Items != nil {
			check(name+"[]", s.Items)
		}
	}
	check("(root)", root)
	for n, d := range root.Defs {
		check(n, d)
	}
	if len(root.Defs) == 0 {
		t.Error("no $defs: the walk above saw only the root")
	}
}

func TestSchemaListsEveryKey(t *testing.T) {
	// Walk the Go shape; every yaml key is a schema property with a
	// description that gives its default or says it is required.
	root := loadSchema(t)
	var walk func(s *schemaDoc, typ reflect.Type, prefix string)
	walk = func(s *schemaDoc, typ reflect.Type, prefix string) {
		s = root.deref(t, s)
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			path := joinPath(prefix, name)
			p := s.Properties[name]
			if p == nil {
				t.Errorf("%s: not in the schema", path)
				continue
			}
			d := strings.ToLower(p.Description)
			if !strings.Contains(d, "default") && !strings.Contains(d, "required") {
				t.Errorf("%s: description gives no default: %q", path, p.Description)
			}
			ft := f.Type
			switch ft.Kind() {
			case reflect.Pointer:
				walk(p, ft.Elem(), path)
			case reflect.Struct:
				walk(p, ft, path)
			case reflect.Slice:
				if ft.Elem().Kind() == reflect.Struct {
					if p.Items == nil {
						t.Fatalf("%s: list without items", path)
					}
					walk(p.Items, ft.Elem(), path+"[]")
				}
			}
		}
		if len(s.Properties) != typ.NumField() {
			t.Errorf("%s: schema has %d properties, the type %d fields", prefix, len(s.Properties), typ.NumField())
		}
	}
	walk(root, reflect.TypeOf(Config{}), "")
	if !slices.Equal(root.Required, []string{"pools"}) {
		t.Errorf("root required = %v", root.Required)
	}
}

func TestSchemaEnums(t *testing.T) {
	// The schema's enums are the values Validate accepts.
	root := loadSchema(t)
	prop := func(def, name string) *schemaDoc {
		t.Helper()
		d := root
		if def != "" {
			d = root.Defs[def]
		}
		p := d.Properties[name]
		if p == nil {
			t.Fatalf("%s.%s missing", def, name)
		}
		if p.Items != nil {
			return p.Items
		}
		return p
	}
	f := func(def, name string, want ...any) {
		t.Helper()
		if got := prop(def, name).Enum; !reflect.DeepEqual(got, want) {
			t.Errorf("%s.%s enum = %v, want %v", def, name, got, want)
		}
	}
	f("", "config_mode", "strict", "compat")
	f("Log", "level", "debug", "info", "warn", "error")
	f("Key", "roles", "data", "control")
	f("Admission", "tokenize", "", "engine")
	f("Pool", "engine", "llamacpp", "vllm", "tgi", "triton")
	f("Pool", "failover", "error", "resume")
	f("Pool", "preemption", "soft", "hard")
	f("Queue", "full_policy", "reject", "drop-lru", "shed-low-priority")
}

func TestYAMLKeys(t *testing.T) {
	keys := YAMLKeys()
	for _, k := range []string{"listen", "metrics.require_key", "auth.keys[].key_sha256", "pools[].queue.per_priority.batch", "pools[].replicas[].tensor_split"} {
		if !slices.Contains(keys, k) {
			t.Errorf("YAMLKeys lacks %s", k)
		}
	}
}
