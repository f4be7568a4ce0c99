// The dashboard's only script besides the playground's. Forms and buttons marked with
// data-api send JSON to the hub's own API with the session cookie; the hub refuses a state
// change made with a session unless it is JSON, which a page on another site cannot send.
// The pages carry no inline script (their Content-Security-Policy allows none): behaviour
// is asked for with data- attributes, handled here.
"use strict";

async function callApi(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error((payload && payload.error && payload.error.message) || `HTTP ${response.status}`);
  }
  return payload;
}

function showError(near, message) {
  const box = near.closest("section, main").querySelector(".error");
  if (!box) return alert(message);
  box.textContent = message;
  box.hidden = false;
}

function formBody(form) {
  const body = {};
  for (const [name, value] of new FormData(form)) {
    if (value === "") {
      // An empty optional field is left out, not sent as "" (or sent as null where the
      // form says empty means "back to the default": data-blank-null).
      if ("blankNull" in form.dataset) body[name] = null;
      continue;
    }
    const type = form.elements[name].type;
    body[name] = type === "number" ? Number(value) : type === "checkbox" ? true : value;
  }
  return "asList" in form.dataset ? [body] : body;
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.dataset.api) return;
  event.preventDefault();
  try {
    const result = await callApi(form.dataset.method, form.dataset.api, formBody(form));
    const reveal = form.dataset.reveal;
    if (reveal) {
      // A new key is shown once: keep the page until its owner has copied it.
      const box = form.closest("section").querySelector(".secret");
      box.querySelector("[data-revealed]").textContent = result[reveal];
      box.hidden = false;
      return;
    }
    location.reload();
  } catch (error) {
    showError(form, error.message);
  }
});

document.addEventListener("change", (event) => {
  if ("submitOnChange" in event.target.dataset) event.target.form.submit();
});

document.addEventListener("click", (event) => {
  if (event.target.closest("button[data-reload]")) location.reload();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-api]");
  if (!button) return;
  if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
  try {
    await callApi(button.dataset.method, button.dataset.api);
    location.reload();
  } catch (error) {
    showError(button, error.message);
  }
});
