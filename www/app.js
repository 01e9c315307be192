// The demo page: one Mercure subscription carrying both the ticker's random
// strings and the messages of the chat rooms joined, the stream's state,
// the rooms (joined ones ticked, the one written in bold, how many
// browsers follow each, from the dashboard frames), and a form that posts
// to /messages with the room. The stream is shared by every tab of the browser
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
const roomsEl = $("rooms");
const roomForm = $("room-form");
const roomNameEl = $("room-name");
const chatRoomEl = $("chat-room");
let count = 0;
let current = localStorage.getItem("sse-mio-room") || "lobby";
let listeners = {}; // room -> streams following it, from the dashboard
let chatHistory = []; // the messages fetched from /messages, for rooms joined later

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

function roomOf(message) {
  return message.room || "lobby";
}

function addChat(id, message) {
  if (!SseShare.rooms.includes(roomOf(message))) return;
  if (chatLog.querySelector(`li[data-id="${CSS.escape(String(id))}"]`)) return;
  emptyNote.remove();
  // Newest at the bottom; stay scrolled to the bottom if the reader was there.
  const atBottom = chatLog.scrollTop + chatLog.clientHeight >= chatLog.scrollHeight - 8;
  const item = el("li");
  item.dataset.id = id;
  item.dataset.room = roomOf(message);
  const meta = el("div", "meta");
  meta.append(el("strong", "user", message.user), el("span", "room", roomOf(message)), el("time", "", new Date(message.at).toLocaleTimeString()));
  item.append(meta, el("div", "body", message.text));
  // In id order (a room joined later brings older messages).
  const later = [...chatLog.querySelectorAll("li[data-id]")].find((li) => Number(li.dataset.id) > Number(id));
  chatLog.insertBefore(item, later ?? null);
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

// A Mercure id ("#<n>") as the page shows it: n.
const shownId = (id) => String(id || "").replace(/^#/, "");

// The rooms: those joined, those the dashboard says are followed, the
// current one; each with its count.
function showRooms() {
  const joined = SseShare.rooms;
  if (!joined.includes(current)) current = joined[0];
  chatRoomEl.textContent = current;
  const names = [...new Set([...joined, ...Object.keys(listeners)])].sort();
  roomsEl.replaceChildren(
    ...names.map((name) => {
      const item = el("li", name === current ? "current" : "");
      item.dataset.room = name;
      const box = el("input");
      box.type = "checkbox";
      box.checked = joined.includes(name);
      box.setAttribute("aria-label", `follow ${name}`);
      box.addEventListener("change", () => {
        const next = box.checked ? [...joined, name] : joined.filter((r) => r !== name);
        SseShare.setRooms(next);
      });
      const pick = el("button", "", name);
      pick.type = "button";
      pick.addEventListener("click", () => {
        if (!SseShare.rooms.includes(name)) SseShare.setRooms([...SseShare.rooms, name]);
        current = name;
        localStorage.setItem("sse-mio-room", name);
        showRooms();
      });
      item.append(box, pick, el("span", "count", String(listeners[name] ?? 0)));
      return item;
    }),
  );
}

// Joined rooms changed (here or in another tab): show what the history
// holds of them, and hide the rooms left.
function onRooms() {
  const joined = SseShare.rooms;
  for (const item of [...chatLog.querySelectorAll("li[data-room]")]) {
    if (!joined.includes(item.dataset.room)) item.remove();
  }
  for (const message of chatHistory) addChat(String(message.id), message);
  showRooms();
}

SseShare.on("rooms", onRooms);
SseShare.on("stats", (data) => {
  try {
    listeners = JSON.parse(data).rooms || {};
    showRooms();
  } catch {}
});

roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = roomNameEl.value.trim();
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(name)) return;
  current = name;
  localStorage.setItem("sse-mio-room", name);
  SseShare.setRooms([...SseShare.rooms, name]);
  roomNameEl.value = "";
});

SseShare.on("state", showState);
SseShare.on("event", (message) => {
  count += 1;
  countEl.textContent = String(count);
  const id = shownId(message.id);
  lastIdEl.textContent = id || "–";
  const chat = asChat(message.data);
  if (chat) addChat(id, chat);
  else addTick(id, message.data);
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
    const body = await response.json();
    chatHistory = body.messages;
    for (const message of chatHistory) addChat(String(message.id), message);
    showRooms();
    SseShare.start(body.newest);
  } catch {
    showRooms();
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
      body: JSON.stringify({ user: userEl.value.trim(), text, room: current }),
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
