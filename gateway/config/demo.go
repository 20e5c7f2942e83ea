package config

import _ "embed"

//go:embed default.yaml
var demoYAML []byte

// DemoYAML returns the embedded demo config that `orchd` runs with no flags.
// Its replica URLs are `fake://NAME` placeholders: orchd starts an in-process
// fake engine per replica and substitutes its loopback URL, so validate it
// with ValidateOptions{AllowFakeURLs: true}. The slice is a copy.
func DemoYAML() []byte {
	return append([]byte(nil), demoYAML...)
}
