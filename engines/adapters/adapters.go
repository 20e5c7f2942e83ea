// Package adapters makes the adapter for one engine replica by engine name:
// the one place that knows every engine package (cmd and tests wire it in as
// the gateway's adapter factory).
package adapters

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/llama-orch/llama-orch/engines"
	"github.com/llama-orch/llama-orch/engines/llamacpp"
	"github.com/llama-orch/llama-orch/engines/tgi"
	"github.com/llama-orch/llama-orch/engines/triton"
	"github.com/llama-orch/llama-orch/engines/vllm"
)

// Options tune every adapter alike.
type Options struct {
	// MaxIdleConns is each replica's keep-alive pool size (0 = the
	// adapter's default).
	MaxIdleConns int
	// DialTimeout bounds connecting (0 = the adapter's default).
	DialTimeout time.Duration
	// Model is the model name the engine serves, for engines whose requests
	// name it (vLLM's "model", Triton's path). "" = ask the engine where it
	// can say (vLLM); Triton requires it.
	Model string
	// Dial replaces the dialer (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Engines lists the engines this build has adapters for.
func Engines() []string {
	return []string{engines.LlamaCpp, engines.VLLM, engines.TGI, engines.Triton}
}

// New returns the adapter for one replica of engine at baseURL.
func New(engine, baseURL string, o Options) (engines.Adapter, error) {
	switch engine {
	case engines.LlamaCpp:
		a, err := llamacpp.New(baseURL, llamacpp.Options{MaxIdleConns: o.MaxIdleConns, DialTimeout: o.DialTimeout, Dial: o.Dial})
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return a, nil
	case engines.VLLM:
		a, err := vllm.New(baseURL, vllm.Options{MaxIdleConns: o.MaxIdleConns, DialTimeout: o.DialTimeout, Dial: o.Dial, Model: o.Model})
		if err != nil {
			return nil, err
		}
		return a, nil
	case engines.TGI:
		a, err := tgi.New(baseURL, tgi.Options{MaxIdleConns: o.MaxIdleConns, DialTimeout: o.DialTimeout, Dial: o.Dial, Model: o.Model})
		if err != nil {
			return nil, err
		}
		return a, nil
	case engines.Triton:
		a, err := triton.New(baseURL, triton.Options{MaxIdleConns: o.MaxIdleConns, DialTimeout: o.DialTimeout, Dial: o.Dial, Model: o.Model})
		if err != nil {
			return nil, err
		}
		return a, nil
	}
	return nil, fmt.Errorf("engine %q has no adapter in this build (available: %s)", engine, strings.Join(Engines(), ", "))
}
