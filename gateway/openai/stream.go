package openai

import (
	"strconv"

	"github.com/llama-orch/llama-orch/sse"
)

// Stream encodes the chunks of one streamed response. Its fields are set once
// by the caller; the methods only read them, so one Stream may serve several
// goroutines. Each Append method appends one complete SSE event and, once
// dst has room, allocates nothing.
//
// A completions stream is AppendToken* → AppendFinish → AppendUsage (when
// Request.IncludeUsage) → AppendDone; a chat stream starts with AppendRole.
// Chunk keys are in the order vLLM writes them (id, object, created, model,
// choices, usage) without vLLM's extras (stop_reason, token_ids, …);
// finish chunks carry an empty text (completions) or an empty delta (chat),
// as OpenAI sends them.
type Stream struct {
	// ID is the response id without its prefix: "cmpl-" (completions) or
	// "chatcmpl-" (chat) is prepended.
	ID string
	// Created is the Unix time in seconds of the response.
	Created int64
	// Model is echoed in every chunk.
	Model string
	// Chat selects chat.completion.chunk over text_completion.
	Chat bool
}

// AppendRole appends the first chunk of a chat stream, whose delta is
// {"role":"assistant","content":""}. For a completions stream it appends
// nothing: OpenAI sends no such chunk there.
func (s *Stream) AppendRole(dst []byte) []byte {
	if !s.Chat {
		return dst
	}
	dst = s.appendChunkHead(dst)
	return append(dst, `[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
}

// AppendToken appends one chunk carrying text. text may hold any bytes:
// invalid UTF-8 is written as U+FFFD, so every chunk is valid JSON.
func (s *Stream) AppendToken(dst []byte, text []byte) []byte {
	dst = s.appendChunkHead(dst)
	if s.Chat {
		dst = append(dst, `[{"index":0,"delta":{"content":`...)
		dst = sse.AppendJSONString(dst, text)
		return append(dst, `},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
	}
	dst = append(dst, `[{"index":0,"text":`...)
	dst = sse.AppendJSONString(dst, text)
	return append(dst, `,"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
}

// AppendFinish appends the chunk that ends the choice with finishReason
// ("stop" or "length", as SPEC §3.2's end event says).
func (s *Stream) AppendFinish(dst []byte, finishReason string) []byte {
	dst = s.appendChunkHead(dst)
	if s.Chat {
		dst = append(dst, `[{"index":0,"delta":{},"logprobs":null,"finish_reason":`...)
	} else {
		dst = append(dst, `[{"index":0,"text":"","logprobs":null,"finish_reason":`...)
	}
	dst = appendString(dst, finishReason)
	return append(dst, "}]}\n\n"...)
}

// AppendUsage appends the usage chunk (choices:[]) sent after the finish
// chunk when the request asked for stream_options.include_usage.
func (s *Stream) AppendUsage(dst []byte, promptTokens, completionTokens int) []byte {
	dst = s.appendChunkHead(dst)
	dst = append(dst, "[],"...)
	dst = appendUsage(dst, promptTokens, completionTokens)
	return append(dst, "}\n\n"...)
}

// AppendDone appends the stream's terminator, `data: [DONE]`.
func (s *Stream) AppendDone(dst []byte) []byte {
	return append(dst, "data: [DONE]\n\n"...)
}

// AppendError appends `data: {"error":{…}}`, the frame that reports a
// failure once the stream has begun (the status is already 200). The
// official clients throw an APIError on it. It does not end the stream:
// follow it with AppendDone, as vLLM does.
func (s *Stream) AppendError(dst []byte, e *Error) []byte {
	dst = append(dst, "data: "...)
	dst = e.AppendJSON(dst)
	return append(dst, "\n\n"...)
}

// AppendCompletion appends the whole non-streamed response object: for
// completions choices[{index,text,logprobs,finish_reason}], for chat
// choices[{index,message{role,content,refusal},logprobs,finish_reason}],
// then usage. No trailing newline.
func AppendCompletion(dst []byte, s *Stream, text []byte, finishReason string, promptTokens, completionTokens int) []byte {
	dst = append(dst, `{"id":`...)
	dst = s.appendID(dst)
	if s.Chat {
		dst = append(dst, `,"object":"chat.completion","created":`...)
	} else {
		dst = append(dst, `,"object":"text_completion","created":`...)
	}
	dst = strconv.AppendInt(dst, s.Created, 10)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, s.Model)
	if s.Chat {
		dst = append(dst, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
		dst = sse.AppendJSONString(dst, text)
		dst = append(dst, `,"refusal":null},"logprobs":null,"finish_reason":`...)
	} else {
		dst = append(dst, `,"choices":[{"index":0,"text":`...)
		dst = sse.AppendJSONString(dst, text)
		dst = append(dst, `,"logprobs":null,"finish_reason":`...)
	}
	dst = appendString(dst, finishReason)
	dst = append(dst, "}],"...)
	dst = appendUsage(dst, promptTokens, completionTokens)
	return append(dst, '}')
}

// appendChunkHead appends `data: {"id":…,"object":…,"created":…,"model":…,"choices":`.
func (s *Stream) appendChunkHead(dst []byte) []byte {
	dst = append(dst, `data: {"id":`...)
	dst = s.appendID(dst)
	if s.Chat {
		dst = append(dst, `,"object":"chat.completion.chunk","created":`...)
	} else {
		dst = append(dst, `,"object":"text_completion","created":`...)
	}
	dst = strconv.AppendInt(dst, s.Created, 10)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, s.Model)
	return append(dst, `,"choices":`...)
}

// appendID appends the prefixed id as a JSON string.
func (s *Stream) appendID(dst []byte) []byte {
	if s.Chat {
		dst = append(dst, `"chatcmpl-`...)
	} else {
		dst = append(dst, `"cmpl-`...)
	}
	// Escape the id, then drop the quotes AppendJSONString put around it.
	n := len(dst)
	dst = appendString(dst, s.ID)
	copy(dst[n:], dst[n+1:len(dst)-1])
	dst = dst[:len(dst)-2]
	return append(dst, '"')
}

// appendUsage appends "usage":{…} in OpenAI's key order.
func appendUsage(dst []byte, promptTokens, completionTokens int) []byte {
	dst = append(dst, `"usage":{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(promptTokens), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(completionTokens), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, int64(promptTokens)+int64(completionTokens), 10)
	return append(dst, '}')
}

// appendString appends s as a JSON string. The compiler converts s without
// copying because sse.AppendJSONString neither keeps nor writes its
// argument (go build -gcflags=-m: "zero-copy string->[]byte conversion");
// TestAppendAllocs fails if that ever changes.
func appendString(dst []byte, s string) []byte {
	return sse.AppendJSONString(dst, []byte(s))
}

// appendStringOrNull appends s, or null when s is empty.
func appendStringOrNull(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return appendString(dst, s)
}
