// The demo page: one EventSource on /sse, its state, and the latest events.
// Everything from the network is inserted with textContent, never as HTML.
"use strict";

const MAX_SHOWN = 50;

const stateEl = document.getElementById("state");
const lastIdEl = document.getElementById("last-id");
const countEl = document.getElementById("count");
const listEl = document.getElementById("messages");
let count = 0;

function showState(name) {
  stateEl.textContent = name;
  stateEl.className = "state " + name;
}

function addMessage(id, text) {
  const item = document.createElement("li");
  const idEl = document.createElement("span");
  idEl.className = "id";
  idEl.textContent = id;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(idEl, time, body);
  listEl.prepend(item);
  while (listEl.children.length > MAX_SHOWN) {
    listEl.lastElementChild.remove();
  }
}

const source = new EventSource("/sse");
source.onopen = () => showState("open");
source.onerror = () => {
  // readyState CONNECTING means the browser will retry after `retry:` ms;
  // CLOSED means it gave up (a non-200 answer or a wrong content type).
  showState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
};
source.onmessage = (event) => {
  count += 1;
  countEl.textContent = String(count);
  lastIdEl.textContent = event.lastEventId || "–";
  addMessage(event.lastEventId, event.data);
};
