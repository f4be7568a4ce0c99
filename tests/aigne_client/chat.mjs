// Drives the official AIGNE SDK chat client (@aigne/aigne-hub, AIGNEHubChatModel) against a hub.
//
//   HUB_URL=http://127.0.0.1:8080 HUB_KEY=sk-... MODEL=fake/gpt-4o-mini node chat.mjs
//
// Makes one non-streaming call and one streaming call ("Say hi") and prints one JSON line per
// call on stdout:
//   {"mode":"invoke","text":...,"usage":{...},"model":...}
//   {"mode":"stream","text":...,"usage":{...},"model":...,"chunks":N}
// ("chunks": how many text deltas the stream delivered). On any failure: the error message on
// stderr and a non-zero exit.
//
// The client finds the hub the way it does in production: GET <origin>/__blocklet__.js?type=json,
// the component with did z8ia3xzq2tMq8CRHfaXj1BTYJyYnEcHbqP8cJ, then POST <mountPoint>/api/v2/chat.

const { HUB_URL, HUB_KEY, MODEL } = process.env;
const TIMEOUT_MS = Number(process.env.CHAT_TIMEOUT_MS || 60_000);

function fail(message, code = 1) {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

if (!HUB_URL || !HUB_KEY || !MODEL) fail("HUB_URL, HUB_KEY and MODEL must be set");

// Route every model name to the hub (without this, "openai/..." would go straight to OpenAI),
// and let nothing inherited from the environment point the client elsewhere. These are read
// when the model is constructed and when it first calls, so setting them here is enough.
process.env.BLOCKLET_AIGNE_API_PROVIDER = "aignehub";
process.env.BLOCKLET_AIGNE_API_URL = HUB_URL; // read before AIGNE_HUB_API_URL
process.env.AIGNE_HUB_API_URL = HUB_URL;
process.env.AIGNE_HUB_API_KEY = HUB_KEY;
process.env.AIGNE_OBSERVABILITY_DISABLED = "true";
delete process.env.BLOCKLET_AIGNE_API_CREDENTIAL;
delete process.env.BLOCKLET_AIGNE_API_MODEL;

const timer = setTimeout(() => fail(`timed out after ${TIMEOUT_MS} ms`, 2), TIMEOUT_MS);
timer.unref();

const input = () => ({ messages: [{ role: "user", content: "Say hi" }] });

function line(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function main() {
  const { AIGNEHubChatModel } = await import("@aigne/aigne-hub");
  const model = new AIGNEHubChatModel({ baseURL: HUB_URL, apiKey: HUB_KEY, model: MODEL });

  // 1. Non-streaming: the client POSTs with no options.streaming and reads one JSON body.
  const out = await model.invoke(input());
  line({ mode: "invoke", text: out.text, usage: out.usage, model: out.model });

  // 2. Streaming: options.streaming = true; the client reads SSE `data: {"delta":...}` frames.
  // Merged the way @aigne/core does it (utils/stream-utils.js mergeAgentResponseChunk): text
  // deltas are appended, json deltas assigned over what was there.
  const stream = await model.invoke(input(), { streaming: true });
  const merged = {};
  let chunks = 0;
  for await (const chunk of stream) {
    if (!chunk || !("delta" in chunk)) continue;
    const { text, json } = chunk.delta;
    if (text) {
      for (const [key, value] of Object.entries(text)) {
        if (value) {
          merged[key] = (merged[key] || "") + value;
          if (key === "text") chunks += 1;
        }
      }
    }
    if (json) {
      for (const [key, value] of Object.entries(json)) {
        if (value !== undefined) merged[key] = value;
      }
    }
  }
  line({ mode: "stream", text: merged.text, usage: merged.usage, model: merged.model, chunks });
}

main().then(
  () => process.exit(0),
  (error) => fail(error?.message || String(error)),
);
