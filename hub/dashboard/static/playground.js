// The playground: a streamed chat through the hub's OpenAI-compatible route, signed in by
// the session cookie, and each answer's tokens and credits read back from its call record.
"use strict";

const form = document.getElementById("chat");
const transcript = document.getElementById("transcript");
const promptBox = document.getElementById("prompt");
const sendButton = document.getElementById("send");
let history = [];
let busy = false; // one answer at a time: a second would interleave with the history
let chat = 0; // "New chat" during an answer must not carry it into the new chat

function requestId() {
  // crypto.randomUUID needs a secure context; a hub on a LAN address may not be one.
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "playground-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function addTurn(role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  const meta = document.createElement("div");
  meta.className = "meta";
  turn.append(body, meta);
  transcript.append(turn);
  turn.scrollIntoView({ block: "end" });
  return { turn, body, meta };
}

// Server-sent events from a fetch body: yields each event's `data` (the hub sends one line).
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) yield data;
    }
  }
}

// The call record holds what was billed; it is written just after the stream ends.
async function callRecord(id, tries) {
  for (; tries > 0; tries--) {
    const response = await fetch(`/api/user/calls?request_id=${encodeURIComponent(id)}&limit=1`);
    if (response.ok) {
      const [call] = (await response.json()).data;
      if (call && call.status !== "processing") return call;
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  return null;
}

function describe(call) {
  const estimated = call.usage_estimated ? " (estimated)" : "";
  return (
    `${call.input_tokens} in · ${call.output_tokens} out tokens${estimated} · ` +
    `${call.credits} credits` + (call.duration_ms == null ? "" : ` · ${call.duration_ms} ms`)
  );
}

async function ask() {
  const text = promptBox.value.trim();
  const model = document.getElementById("model").value;
  if (!text || !model || busy) return;
  busy = true;
  const thisChat = chat;
  const system = document.getElementById("system").value.trim();
  history.push({ role: "user", content: text });
  addTurn("user", text);
  promptBox.value = "";
  const answer = addTurn("assistant", "");
  answer.turn.classList.add("streaming");
  sendButton.disabled = true;
  const id = requestId();
  let content = "";
  let failure = null;
  // A refusal (no credit, no rate) leaves no call record: after an error, look only briefly.
  let lookups = 40;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-request-id": id },
      body: JSON.stringify({
        model,
        stream: true,
        stream_options: { include_usage: true },
        messages: (system ? [{ role: "system", content: system }] : []).concat(history),
      }),
    });
    if (!response.ok) {
      lookups = 3;
      const payload = await response.json().catch(() => null);
      failure = (payload && payload.error && payload.error.message) || `HTTP ${response.status}`;
    } else {
      for await (const data of events(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          failure = chunk.error.message;
          break;
        }
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          content += delta.content;
          answer.body.textContent = content;
        }
      }
    }
  } catch (error) {
    failure = error.message;
  }
  answer.turn.classList.remove("streaming");
  if (failure) {
    answer.turn.classList.add("failed");
    answer.meta.textContent = failure;
  }
  if (thisChat === chat) {
    if (content && !failure) {
      history.push({ role: "assistant", content });
    } else {
      history.pop(); // unanswered or cut off: leave it out of what the model sees next
    }
  }
  const call = await callRecord(id, lookups);
  if (call) {
    answer.meta.textContent = (failure ? failure + " · " : "") + describe(call);
    answer.turn.dataset.credits = call.credits;
  }
  sendButton.disabled = false;
  busy = false;
  promptBox.focus();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  ask();
});
promptBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
document.getElementById("reset").addEventListener("click", () => {
  chat += 1;
  history = [];
  transcript.replaceChildren();
  promptBox.focus();
});
