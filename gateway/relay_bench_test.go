package gateway

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llama-orch/llama-orch/engines/fake"
	"github.com/llama-orch/llama-orch/gateway/config"
)

// BenchmarkRelay runs whole one-round-trip streams through the gateway in
// front of a fake engine on loopback (client, gateway and fake share the
// process: use it with -cpuprofile to see the gateway's share). One op is
// one 64-token stream; tokens/s is reported.
func BenchmarkRelay(b *testing.B) {
	for _, itl := range []time.Duration{0, 20 * time.Millisecond} {
		name := "unpaced"
		if itl > 0 {
			name = "paced20ms"
		}
		b.Run(name, func(b *testing.B) {
			t := &testing.T{}
			e := newEnv(t, func(c *config.Config) {
				c.Pools[0].Queue.Capacity = 4096
				c.Pools[0].Replicas[0].Slots = 512
			}, fake.Options{Slots: 512, ITL: itl})
			defer e.close()
			body := taskSpec{maxTokens: 64}.body()
			_ = body
			const c = 64
			b.ResetTimer()
			var wg sync.WaitGroup
			next := make(chan struct{})
			go func() {
				for i := 0; i < b.N; i++ {
					next <- struct{}{}
				}
				close(next)
			}()
			for w := 0; w < c; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						req, _ := http.NewRequest("POST", e.url+"/v1/tasks", strings.NewReader(taskSpec{maxTokens: 64}.body()))
						req.Header.Set("Authorization", "Bearer "+testKey)
						req.Header.Set("Accept", "text/event-stream")
						res, err := e.hc.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, res.Body) //nolint:errcheck
						res.Body.Close()
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
