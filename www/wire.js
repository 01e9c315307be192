// The raw wire view: fetch('/sse'), read the body chunk by chunk, show each
// chunk with its line breaks made visible, and parse it the way the WHATWG
// "interpret an event stream" algorithm says (LF, CR and CRLF all end a
// line; comments start with a colon; a blank line dispatches).
"use strict";

const MAX_CHUNKS = 300;
const MAX_EVENTS = 200;
const raw = document.getElementById("wire-raw");
const list = document.getElementById("wire-events");
const stateEl = document.getElementById("wire-state");
let bytes = 0;
let reads = 0;
let paused = false;

document.getElementById("wire-toggle").addEventListener("click", (event) => {
  paused = !paused;
  event.target.textContent = paused ? "Resume" : "Pause";
});

function visible(text) {
  return text.replace(/\r\n/g, "\\r\\n\n").replace(/\r/g, "\\r\n").replace(/\n(?!$)/g, "\\n\n").replace(/\n$/, "\\n\n");
}

function showChunk(text) {
  if (paused) return;
  const span = document.createElement("span");
  span.className = "chunk";
  span.textContent = visible(text);
  raw.append(span);
  while (raw.children.length > MAX_CHUNKS) raw.firstElementChild.remove();
  raw.scrollTop = raw.scrollHeight;
}

function showItem(kind, fields) {
  if (paused) return;
  const item = document.createElement("li");
  item.className = kind;
  const title = document.createElement("strong");
  title.textContent = kind;
  item.append(title);
  for (const [name, value] of fields) {
    const row = document.createElement("div");
    const key = document.createElement("code");
    key.textContent = name + ": ";
    const val = document.createElement("span");
    val.textContent = JSON.stringify(value);
    row.append(key, val);
    item.append(row);
  }
  // Oldest first, like the bytes beside it, so a chunk and its events line up.
  list.append(item);
  while (list.children.length > MAX_EVENTS) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

// The parser's state, as in the standard.
let buffer = "";
let afterCR = false;
let data = "";
let type = "";
let lastEventId = "";

function line(text) {
  if (text === "") {
    if (data === "") { type = ""; return; }
    showItem("event", [["type", type || "message"], ["data", data.slice(0, -1)], ["lastEventId", lastEventId]]);
    data = ""; type = "";
    return;
  }
  if (text.startsWith(":")) { showItem("comment", [["text", text.slice(1)]]); return; }
  const colon = text.indexOf(":");
  const field = colon < 0 ? text : text.slice(0, colon);
  let value = colon < 0 ? "" : text.slice(colon + 1);
  if (value.startsWith(" ")) value = value.slice(1);
  if (field === "data") data += value + "\n";
  else if (field === "event") type = value;
  else if (field === "id" && !value.includes("\0")) lastEventId = value;
  else if (field === "retry" && /^\d+$/.test(value)) showItem("retry", [["ms", Number(value)]]);
}

function feed(text) {
  for (const ch of text) {
    if (afterCR) { afterCR = false; if (ch === "\n") continue; }
    if (ch === "\n") { line(buffer); buffer = ""; }
    else if (ch === "\r") { afterCR = true; line(buffer); buffer = ""; }
    else buffer += ch;
  }
}

async function run() {
  try {
    const response = await fetch("/sse", { headers: { Accept: "text/event-stream" } });
    stateEl.textContent = response.ok ? "open" : "HTTP " + response.status;
    stateEl.className = "state " + (response.ok ? "open" : "closed");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.length;
      reads += 1;
      document.getElementById("wire-bytes").textContent = String(bytes);
      document.getElementById("wire-reads").textContent = String(reads);
      const text = decoder.decode(value, { stream: true });
      showChunk(text);
      feed(text);
    }
    stateEl.textContent = "closed by the server";
  } catch (error) {
    stateEl.textContent = "error: " + error.message;
  }
  stateEl.className = "state closed";
}

run();
