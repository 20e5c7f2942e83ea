package config

import (
	"strings"
	"testing"
)

// TestPlacementKV: the per-GPU KV budget must fit the smallest GPU of a
// heterogeneous split, vram_bytes has one entry per device (SPEC §5).
func TestPlacementKV(t *testing.T) {
	f := func(replica, want string) {
		t.Helper()
		yml := "pools:\n  - { id: p, engine: llamacpp, model: m, replicas: [ " + replica + " ] }\n"
		_, ps, err := Check([]byte(yml), ValidateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		all := strings.Join(got, "\n")
		if want == "" && HasErrors(ps) || want != "" && !strings.Contains(all, want) {
			t.Errorf("%s: problems %q, want %q", replica, all, want)
		}
	}
	// fits the smallest GPU
	f(`{ id: r0, url: "http://127.0.0.1:9001", devices: [0, 1], tensor_split: [0.7, 0.3], vram_bytes: [24000000000, 12000000000], kv_bytes_per_gpu: 8000000000 }`, "")
	// above the smallest GPU
	f(`{ id: r0, url: "http://127.0.0.1:9001", devices: [0, 1], tensor_split: [0.7, 0.3], vram_bytes: [24000000000, 12000000000], kv_bytes_per_gpu: 16000000000 }`, "above the smallest GPU")
	// one vram entry per device
	f(`{ id: r0, url: "http://127.0.0.1:9001", devices: [0, 1], tensor_split: [0.5, 0.5], vram_bytes: [24000000000] }`, "vram_bytes: has 1 entries for 2 devices")
	// a budget on several GPUs needs their sizes
	f(`{ id: r0, url: "http://127.0.0.1:9001", devices: [0, 1], tensor_split: [0.5, 0.5], kv_bytes_per_gpu: 1000 }`, "needs vram_bytes")
}
