// Drives orchd's OpenAI-compatible front door (SPEC §3.5) with the official
// `openai` npm client, to prove that unchanged OpenAI clients work.
//
// Environment:
//   OPENAI_BASE_URL  e.g. http://127.0.0.1:8080/v1 (required)
//   OPENAI_API_KEY   an API key orchd accepts (required)
//   MODEL            a model a pool serves (required)
//   UNKNOWN_MODEL    a model no pool serves (default: MODEL + "-no-such-model")
//   EXPECT_429=1     also flood the door and expect a RateLimitError
//   FLOOD_REQUESTS   concurrent requests of that flood (default 64)
//
// Prints one JSON object on stdout:
//   {"completion":{"text","finish_reason","usage"},
//    "completion_stream":{"text","chunks","usage"},
//    "chat_stream":{"text","chunks"},
//    "chat":{"text","finish_reason","usage"},
//    "unknown_model":{"status","type","message"},
//    "rate_limited":{"status","type","code","retry_after","x_backoff_ms","ok","limited"}   (EXPECT_429=1 only)}
// "chunks" counts every chunk the client yielded. Any unexpected outcome
// exits 1 with a message on stderr.
//
// Usage: npm ci && OPENAI_BASE_URL=… OPENAI_API_KEY=… MODEL=… node client.mjs

import OpenAI from 'openai';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') fail(`${name} is not set`);
  return v;
};

function fail(message) {
  process.stderr.write(`openai-client: ${message}\n`);
  process.exit(1);
}

function check(ok, what, value) {
  if (!ok) fail(`${what}: got ${JSON.stringify(value)}`);
}

const FINISH = new Set(['stop', 'length']);

function checkUsage(what, usage) {
  check(
    usage != null &&
      Number.isInteger(usage.prompt_tokens) &&
      Number.isInteger(usage.completion_tokens) &&
      usage.total_tokens === usage.prompt_tokens + usage.completion_tokens &&
      usage.completion_tokens > 0,
    `${what}: usage must hold prompt, completion (> 0) and total tokens`,
    usage,
  );
  return {
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
    total_tokens: usage.total_tokens,
  };
}

const baseURL = env('OPENAI_BASE_URL');
const model = env('MODEL');
const client = new OpenAI({
  baseURL,
  apiKey: env('OPENAI_API_KEY'),
  maxRetries: 0, // a retry would hide a wrong status or a dropped stream
  timeout: 20_000,
});

const prompt = 'The capital of France is';
const messages = [
  { role: 'system', content: 'You answer in one short sentence.' },
  { role: 'user', content: 'What is the capital of France?' },
];
const out = {};

async function step(name, fn) {
  try {
    out[name] = await fn();
  } catch (err) {
    fail(`${name}: ${err?.constructor?.name ?? 'Error'}: ${err?.message ?? err}`);
  }
}

// (a) completions, not streamed.
await step('completion', async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: 8, seed: 42, temperature: 0 });
  check(r.object === 'text_completion', 'completion: object', r.object);
  check(typeof r.id === 'string' && r.id.startsWith('cmpl-'), 'completion: id', r.id);
  check(r.choices?.length === 1, 'completion: one choice', r.choices);
  const [c] = r.choices;
  check(typeof c.text === 'string', 'completion: text', c.text);
  check(FINISH.has(c.finish_reason), 'completion: finish_reason', c.finish_reason);
  return { text: c.text, finish_reason: c.finish_reason, usage: checkUsage('completion', r.usage) };
});

// (b) completions, streamed, with the usage chunk.
await step('completion_stream', async () => {
  const stream = await client.completions.create({
    model, prompt, max_tokens: 8, seed: 42, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '', chunks = 0, finish = null, usage = null;
  for await (const chunk of stream) {
    chunks++;
    check(chunk.object === 'text_completion', 'completion_stream: object', chunk.object);
    if (chunk.usage) {
      check(chunk.choices.length === 0, 'completion_stream: the usage chunk has no choices', chunk.choices);
      usage = chunk.usage;
      continue;
    }
    check(usage === null, 'completion_stream: a chunk after the usage chunk', chunk);
    const c = chunk.choices[0];
    text += c.text;
    if (c.finish_reason != null) {
      check(finish === null && FINISH.has(c.finish_reason), 'completion_stream: finish_reason', c.finish_reason);
      finish = c.finish_reason;
    }
  }
  check(finish !== null, 'completion_stream: no chunk carried a finish_reason', chunks);
  return { text, chunks, usage: checkUsage('completion_stream', usage) };
});

// (c) chat, streamed: the role chunk comes first.
await step('chat_stream', async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_completion_tokens: 8, seed: 42, temperature: 0, stream: true,
  });
  let text = '', chunks = 0, finish = null;
  for await (const chunk of stream) {
    check(chunk.object === 'chat.completion.chunk', 'chat_stream: object', chunk.object);
    check(chunk.usage == null, 'chat_stream: usage without include_usage', chunk.usage);
    const c = chunk.choices[0];
    if (chunks++ === 0) check(c?.delta?.role === 'assistant', 'chat_stream: first delta role', c?.delta);
    text += c.delta?.content ?? '';
    if (c.finish_reason != null) {
      check(finish === null && FINISH.has(c.finish_reason), 'chat_stream: finish_reason', c.finish_reason);
      finish = c.finish_reason;
    }
  }
  check(finish !== null, 'chat_stream: no chunk carried a finish_reason', chunks);
  return { text, chunks };
});

// (d) chat, not streamed.
await step('chat', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8, seed: 42, temperature: 0 });
  check(r.object === 'chat.completion', 'chat: object', r.object);
  check(typeof r.id === 'string' && r.id.startsWith('chatcmpl-'), 'chat: id', r.id);
  check(r.choices?.length === 1, 'chat: one choice', r.choices);
  const [c] = r.choices;
  check(c.message?.role === 'assistant' && typeof c.message.content === 'string', 'chat: message', c.message);
  check(FINISH.has(c.finish_reason), 'chat: finish_reason', c.finish_reason);
  return { text: c.message.content, finish_reason: c.finish_reason, usage: checkUsage('chat', r.usage) };
});

// (e) a model nobody serves: the client must throw an APIError, 400 or 404.
await step('unknown_model', async () => {
  const unknown = env('UNKNOWN_MODEL', `${model}-no-such-model`);
  try {
    await client.completions.create({ model: unknown, prompt, max_tokens: 1 });
  } catch (err) {
    check(err instanceof OpenAI.APIError && !(err instanceof OpenAI.APIConnectionError),
      'unknown_model: want an APIError', `${err?.constructor?.name}: ${err?.message}`);
    check(err.status === 400 || err.status === 404, 'unknown_model: status', err.status);
    check(typeof err.error?.message === 'string' && err.error.message !== '', 'unknown_model: error body', err.error);
    return { status: err.status, type: err.type ?? null, message: err.error.message };
  }
  fail(`unknown_model: ${unknown} was served`);
});

// (f) optional: flood the door until admission answers 429.
if (process.env.EXPECT_429 === '1') {
  await step('rate_limited', async () => {
    const n = Number.parseInt(process.env.FLOOD_REQUESTS ?? '64', 10);
    check(Number.isInteger(n) && n > 0 && n <= 1024, 'FLOOD_REQUESTS', process.env.FLOOD_REQUESTS);
    const results = await Promise.allSettled(
      Array.from({ length: n }, () => client.completions.create({ model, prompt, max_tokens: 64 })),
    );
    let ok = 0, limited = null, count = 0;
    for (const r of results) {
      if (r.status === 'fulfilled') { ok++; continue; }
      const err = r.reason;
      check(err instanceof OpenAI.RateLimitError, 'rate_limited: want only successes and RateLimitErrors',
        `${err?.constructor?.name}: ${err?.message}`);
      count++;
      limited ??= err;
    }
    check(limited !== null, `rate_limited: none of ${n} concurrent requests got a 429`, ok);
    const retryAfter = limited.headers?.get('retry-after') ?? null;
    check(retryAfter !== null && /^\d+$/.test(retryAfter), 'rate_limited: Retry-After (seconds)', retryAfter);
    return {
      status: limited.status,
      type: limited.type ?? null,
      code: limited.code ?? null,
      retry_after: retryAfter,
      x_backoff_ms: limited.headers?.get('x-backoff-ms') ?? null,
      ok,
      limited: count,
    };
  });
}

process.stdout.write(JSON.stringify(out) + '\n');
