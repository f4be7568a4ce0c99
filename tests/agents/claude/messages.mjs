// The official Anthropic Node SDK against the hub: for each model given, one whole answer
// and one stream with a tool; prints what it got as JSON for tests/agents/claude/.
// Usage: node messages.mjs <hub url> <api key> <model>...
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, apiKey, ...models] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0 });
const weather = {
  name: "get_weather",
  description: "The weather in a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const results = {};
for (const model of models) {
  const whole = await client.messages.create({
    model,
    max_tokens: 100,
    messages: [{ role: "user", content: "Say hi" }],
  });
  const stream = client.messages.stream({
    model,
    max_tokens: 100,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools: [weather],
  });
  const events = [];
  for await (const event of stream) events.push(event.type);
  const streamed = await stream.finalMessage();
  results[model] = { whole, events, streamed };
}
console.log(JSON.stringify(results));
