// The official `openai` Node SDK's Responses API against the hub: for each model in MODELS,
// one whole call and one streamed call. Prints one JSON line per call.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: `${process.env.HUB_URL}/v1`, apiKey: process.env.HUB_KEY, maxRetries: 0 });

for (const model of process.env.MODELS.split(",")) {
  const whole = await client.responses.create({ model, input: "Say hi", instructions: "Be brief." });
  console.log(JSON.stringify({ model, mode: "create", text: whole.output_text, usage: whole.usage, id: whole.id }));

  const stream = await client.responses.create({ model, input: "Say hi", stream: true });
  const types = [];
  let text = "";
  let usage = null;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed") usage = event.response.usage;
  }
  console.log(JSON.stringify({ model, mode: "stream", text, usage, types }));
}
