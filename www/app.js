// The demo page: the stream of /sse carrying both the ticker's random
// strings and the chat's messages, the stream's state, and a form that
// posts to /messages. The stream is shared by every tab of the browser
// (share.js: one tab holds the connection and relays it). The page starts
// with the chat the server still holds (GET /messages), then follows the
// stream from right after the newest id, so nothing is missed or shown
// twice. Chat messages appear only when they come back through the stream,
// so what a user sees is what everyone sees. Everything from the network
// is inserted with textContent, never as HTML.
"use strict";

const MAX_TICKS = 50;
const MAX_CHAT = 200;

const $ = (id) => document.getElementById(id);
const stateEl = $("state");
const lastIdEl = $("last-id");
const countEl = $("count");
const ticksEl = $("messages");
const chatLog = $("chat-log");
const form = $("chat-form");
const userEl = $("chat-user");
const textEl = $("chat-text");
const errorEl = $("chat-error");
const sharedEl = $("shared");
let count = 0;

function showState(name) {
  stateEl.textContent = name;
  stateEl.className = "state " + name;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addTick(id, text) {
  const item = el("li");
  item.dataset.id = id;
  item.append(el("span", "id", id), el("time", "", new Date().toLocaleTimeString()), el("span", "text", text));
  ticksEl.prepend(item);
  while (ticksEl.children.length > MAX_TICKS) ticksEl.lastElementChild.remove();
}

// The chat log says so while it is empty.
const emptyNote = el("li", "empty", "No messages yet: say hello.");
chatLog.append(emptyNote);

function addChat(id, message) {
  if (chatLog.querySelector(`li[data-id="${CSS.escape(String(id))}"]`)) return;
  emptyNote.remove();
  // Newest at the bottom; stay scrolled to the bottom if the reader was there.
  const atBottom = chatLog.scrollTop + chatLog.clientHeight >= chatLog.scrollHeight - 8;
  const item = el("li");
  item.dataset.id = id;
  const meta = el("div", "meta");
  meta.append(el("strong", "user", message.user), el("time", "", new Date(message.at).toLocaleTimeString()));
  item.append(meta, el("div", "body", message.text));
  chatLog.append(item);
  while (chatLog.children.length > MAX_CHAT) chatLog.firstElementChild.remove();
  if (atBottom) chatLog.scrollTop = chatLog.scrollHeight;
}

// A chat message is a JSON object with user, text and at; a tick is a bare
// random string. Both come as "message" events.
function asChat(data) {
  if (!data.startsWith("{")) return null;
  try {
    const value = JSON.parse(data);
    return value && typeof value.text === "string" && typeof value.user === "string" ? value : null;
  } catch {
    return null;
  }
}

SseShare.on("state", showState);
SseShare.on("event", (message) => {
  count += 1;
  countEl.textContent = String(count);
  lastIdEl.textContent = message.id || "–";
  const chat = asChat(message.data);
  if (chat) addChat(message.id, chat);
  else addTick(message.id, message.data);
});
SseShare.on("reset", (message) => {
  // The server no longer had what we missed while away.
  lastIdEl.textContent = message.id || "–";
  const note = el("li", "notice", "Some messages were missed while disconnected.");
  chatLog.append(note);
});
SseShare.on("role", ({ leader, mode, tabs }) => {
  if (mode === "alone") {
    sharedEl.textContent = "this tab only: this browser cannot share one connection between tabs, so each tab opens its own";
  } else {
    const by = tabs === 1 ? "1 tab" : `${tabs} tabs`;
    sharedEl.textContent = `shared by ${by}; ` + (leader ? "this tab holds the connection" : "another tab holds the connection");
  }
  sharedEl.className = leader ? "leader" : "follower";
});

// The chat the server still holds first, then the stream from right after
// the newest event it knows of. If that fails (an older server), just the
// stream.
async function start() {
  try {
    const response = await fetch("/messages", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(String(response.status));
    const history = await response.json();
    for (const message of history.messages) addChat(String(message.id), message);
    SseShare.start(history.newest);
  } catch {
    SseShare.start(null);
  }
}

start();

userEl.value = localStorage.getItem("sse-mio-user") || "";
userEl.addEventListener("change", () => localStorage.setItem("sse-mio-user", userEl.value.trim()));

textEl.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = textEl.value;
  if (!text.trim()) return;
  errorEl.textContent = "";
  localStorage.setItem("sse-mio-user", userEl.value.trim());
  try {
    const response = await fetch("/messages", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: userEl.value.trim(), text }),
    });
    if (response.ok) {
      textEl.value = "";
    } else {
      const body = await response.json().catch(() => ({}));
      errorEl.textContent = body.error || "Could not send (" + response.status + ")";
    }
  } catch {
    errorEl.textContent = "Could not reach the server.";
  }
  textEl.focus();
});
