package triton

import (
	"strconv"

	"github.com/llama-orch/llama-orch/engines/fake/internal/wire"
)

// metrics renders GET /metrics: Triton's core and GPU families and the
// vLLM backend's custom gauges (REPORT_CUSTOM_METRICS), in Triton's
// exposition format, from the fake's state.
func (s *Server) metrics() []byte {
	s.mu.Lock()
	st, kvTokens := s.sched.counters, s.sched.kvTokens
	busy, waiting, slots := s.sched.slots.Busy(), s.sched.slots.Waiting(), float64(s.sched.slots.Size())
	s.mu.Unlock()
	kvUsage := float64(kvTokens) / (slots * float64(s.o.Ctx))
	model := `{model="` + s.o.Model + `",version="` + ModelVersion + `"}`
	gpu := `{gpu_uuid="` + s.gpuUUID + `"}`

	var b []byte
	family := func(name, help, typ string) { b = wire.AppendMetricHead(b, name, help, typ) }
	sample := func(name, labels string, v float64) {
		b = append(b, name...)
		b = append(b, labels...)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, v, 'f', -1, 64)
		b = append(b, '\n')
	}
	family("nv_inference_request_success", "Number of successful inference requests, all batch sizes", "counter")
	sample("nv_inference_request_success", model, float64(st.success))
	family("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "counter")
	sample("nv_inference_request_failure", `{model="`+s.o.Model+`",reason="BACKEND",version="`+ModelVersion+`"}`, float64(st.failure))
	family("nv_inference_count", "Number of inferences performed (does not include cached requests)", "counter")
	sample("nv_inference_count", model, float64(st.inferenceCount))
	family("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds (includes cached requests)", "counter")
	sample("nv_inference_request_duration_us", model, float64(st.requestDurationUs))
	family("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds (includes cached requests)", "counter")
	sample("nv_inference_queue_duration_us", model, float64(st.queueDurationUs))
	// The vLLM backend is decoupled: Triton hands it every request at once,
	// so the core's pending count stays 0 and the queue is vLLM's.
	family("nv_inference_pending_request_count", "Instantaneous number of pending requests awaiting execution per-model.", "gauge")
	sample("nv_inference_pending_request_count", model, 0)
	family("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge")
	sample("nv_gpu_utilization", gpu, float64(busy)/slots)
	family("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge")
	sample("nv_gpu_memory_total_bytes", gpu, gpuMemoryTotal)
	family("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge")
	sample("nv_gpu_memory_used_bytes", gpu, float64(gpuWeightsBytes+kvTokens*kvBytesPerToken))
	family("vllm:prompt_tokens_total", "Number of prefill tokens processed.", "counter")
	sample("vllm:prompt_tokens_total", model, float64(st.promptTokens))
	family("vllm:generation_tokens_total", "Number of generation tokens processed.", "counter")
	sample("vllm:generation_tokens_total", model, float64(st.generationTokens))
	family("vllm:num_requests_running", "Number of requests currently running on GPU.", "gauge")
	sample("vllm:num_requests_running", model, float64(busy))
	family("vllm:num_requests_waiting", "Number of requests waiting to be processed.", "gauge")
	sample("vllm:num_requests_waiting", model, float64(waiting))
	family("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", "gauge")
	sample("vllm:gpu_cache_usage_perc", model, kvUsage)
	return b
}
