// lmforge chat page: plain JavaScript, no build step. It keeps the conversation in the
// page, sends it to /v1/chat/completions with stream: true, and appends each SSE chunk's
// delta as it arrives.
"use strict";

const $ = (id) => document.getElementById(id);
let history = [];
let modelName = null;
let busy = false;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    modelName = body.data[0].id;
    $("model").textContent = modelName + " · context " + body.data[0].context_length;
  } catch (e) {
    $("model").textContent = "(models: " + e.message + ")";
  }
}

function number(id, parse) {
  const v = $(id).value.trim();
  return v === "" ? undefined : parse(v);
}

async function send(text) {
  if (!modelName) await loadModel();
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant streaming", "");
  const system = $("system").value.trim();
  const body = {
    model: modelName,
    messages: (system ? [{ role: "system", content: system }] : []).concat(history),
    stream: true,
    stream_options: { include_usage: true },
    temperature: number("temperature", parseFloat),
    top_p: number("top_p", parseFloat),
    top_k: number("top_k", (v) => parseInt(v, 10)),
    min_p: number("min_p", parseFloat),
    max_tokens: number("max_tokens", (v) => parseInt(v, 10)),
    seed: number("seed", (v) => parseInt(v, 10)),
  };
  const start = performance.now();
  let first = null, tokens = 0, answer = "";
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body),
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      throw new Error(err.error ? err.error.message : r.status + " " + r.statusText);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        for (const c of chunk.choices) {
          if (c.delta && c.delta.content) {
            if (first === null) first = performance.now();
            answer += c.delta.content;
            out.textContent = answer;
            $("log").scrollTop = $("log").scrollHeight;
          }
        }
      }
    }
    history.push({ role: "assistant", content: answer });
    const seconds = (performance.now() - (first || start)) / 1000;
    const ttft = first === null ? 0 : (first - start) / 1000;
    $("speed").textContent = tokens + " tokens · " +
      (tokens > 1 && seconds > 0 ? ((tokens - 1) / seconds).toFixed(1) : "–") +
      " tokens/s · first token " + ttft.toFixed(2) + " s";
  } catch (e) {
    history.pop();
    out.remove();
    bubble("error", e.message);
  } finally {
    out.classList.remove("streaming");
  }
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || busy) return;
  busy = true;
  $("send").disabled = true;
  $("prompt").value = "";
  try { await send(text); } finally { busy = false; $("send").disabled = false; $("prompt").focus(); }
});

$("prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("form").requestSubmit(); }
});

$("reset").addEventListener("click", () => {
  history = [];
  $("log").innerHTML = "";
  $("speed").textContent = "";
});

$("api_key").value = localStorage.getItem("lmforge_api_key") || "";
$("api_key").addEventListener("change", () => {
  localStorage.setItem("lmforge_api_key", $("api_key").value);
  loadModel();
});
loadModel();
