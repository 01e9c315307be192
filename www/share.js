// One connection per browser, not two per tab. A browser allows six HTTP/1.1
// connections per server, and every tab of the demo needs two long-lived
// ones (/sse and /stats): on its own, the fourth tab would never load. So
// the tabs of one origin elect a leader; only the leader opens the streams,
// and it relays every event, every stats frame and the stream's state to
// the other tabs over a BroadcastChannel. Followers show exactly what the
// leader receives: the same ids, in the same order.
//
// - Election: the Web Locks API (navigator.locks) where there is one: the
//   leader holds a lock for the tab's life; when it closes or reloads, the
//   next waiting tab gets the lock at once. Web Locks exists only in secure
//   contexts (https, localhost); elsewhere (http://<LAN address>:3000) the
//   tabs elect over the channel itself: the leader says so every second, a
//   tab that hears nothing for three claims the lead, and the lowest claim
//   wins.
// - Hand-over without a gap: a new leader opens
//   /sse?lastEventId=<the newest id it has shown>; every tab drops an id it
//   has shown already, so every tab sees every event once.
// - Where there is no BroadcastChannel either, each tab opens its own
//   streams, and the page says so.
// - The stream is a Mercure subscription (/.well-known/mercure): the tick's
//   topic and one topic per room the browser has joined (/rooms/<name>).
//   Joining or leaving a room (kept in localStorage, so every tab agrees)
//   makes the leader open a new subscription from the newest id shown.
//   Mercure ids are "#<n>"; the page shows n.
"use strict";

(() => {
  const CHANNEL = "sse-mio";
  const LOCK = "sse-mio-leader";
  const HEARTBEAT_MS = 1000;
  const TAKEOVER_MS = 3000;
  const CLAIM_WAIT_MS = 400;
  const PRESENCE_MS = 2000;

  const ROOMS_KEY = "sse-mio-rooms";
  const me = Math.floor(Math.random() * 2 ** 52);
  const handlers = { event: [], reset: [], stats: [], state: [], statsState: [], role: [], rooms: [] };
  const emit = (kind, value) => handlers[kind].forEach((fn) => fn(value));

  let leader = false;
  let started = false;
  let pending = []; // events relayed before start(): after the history
  let newest = null; // the newest event id this tab has shown
  let streamState = "connecting";
  let statsState = "connecting";
  let sources = [];
  const peers = new Map(); // tab id -> when it last said it is here
  const channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL) : null;
  const mode = !channel ? "alone" : navigator.locks ? "locks" : "channel";

  const send = (message) => channel?.postMessage({ ...message, from: me });

  function tabs() {
    const now = Date.now();
    for (const [id, seen] of peers) if (now - seen > PRESENCE_MS * 2.5) peers.delete(id);
    return peers.size + 1;
  }

  function role() {
    emit("role", { leader, mode, tabs: tabs() });
  }

  // An event, from this tab's own stream or relayed: each id once, and
  // none before the history the page showed first.
  function deliver(message) {
    if (!started) {
      pending.push(message);
      return;
    }
    const id = Number(String(message.id).replace(/^#/, ""));
    if (newest !== null && id <= newest) return;
    newest = id;
    emit(message.type === "reset" ? "reset" : "event", message);
  }

  function setState(name) {
    streamState = name;
    emit("state", name);
    if (leader) send({ type: "state", state: name });
  }

  function setStatsState(name) {
    statsState = name;
    emit("statsState", name);
    if (leader) send({ type: "statsState", state: name });
  }

  // The rooms this browser has joined (the lobby when none).
  function rooms() {
    try {
      const list = JSON.parse(localStorage.getItem(ROOMS_KEY) || "[]");
      if (Array.isArray(list) && list.length) return list.filter((r) => typeof r === "string");
    } catch {}
    return ["lobby"];
  }

  function subscriptionUrl() {
    const url = new URL("/.well-known/mercure", location.href);
    url.searchParams.append("match", "/tick");
    for (const room of rooms()) url.searchParams.append("match", "/rooms/" + room);
    if (newest !== null) url.searchParams.set("last_event_id", "#" + newest);
    return url.pathname + url.search;
  }

  // The leader's (or a lone tab's) streams.
  let events = null;
  function openEvents() {
    events?.close();
    events = new EventSource(subscriptionUrl());
    events.onopen = () => setState("open");
    events.onerror = () => setState(events.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    events.onmessage = (event) => {
      const message = { type: "event", id: event.lastEventId, data: event.data };
      deliver(message);
      send(message);
    };
    return events;
  }

  function openStreams() {
    openEvents();
    const stats = new EventSource("/stats");
    stats.onopen = () => setStatsState("live");
    stats.onerror = () => setStatsState("reconnecting");
    stats.addEventListener("stats", (event) => {
      emit("stats", event.data);
      send({ type: "stats", data: event.data });
    });
    sources = [stats];
  }

  function lead() {
    if (leader) return;
    leader = true;
    role();
    openStreams();
  }

  function stepDown() {
    if (!leader) return;
    leader = false;
    sources.forEach((s) => s.close());
    sources = [];
    events?.close();
    events = null;
    role();
  }

  // ---- the channel: relayed events, state, presence, and (without Web
  // Locks) the election.
  let lastLeaderHeard = 0;
  let claiming = null;
  if (channel) {
    channel.onmessage = ({ data: m }) => {
      if (m.from === me) return;
      peers.set(m.from, Date.now());
      switch (m.type) {
        case "event":
        case "reset":
          if (!leader) deliver(m);
          break;
        case "stats":
          if (!leader) emit("stats", m.data);
          break;
        case "state":
          if (!leader) { streamState = m.state; emit("state", m.state); }
          break;
        case "statsState":
          if (!leader) { statsState = m.state; emit("statsState", m.state); }
          break;
        case "hello":
          // A new tab: tell it the shared stream's state now.
          if (leader) {
            send({ type: "state", state: streamState });
            send({ type: "statsState", state: statsState });
            send({ type: "leader" });
          }
          role();
          break;
        case "bye":
          peers.delete(m.from);
          role();
          break;
        case "leader":
          lastLeaderHeard = Date.now();
          // Two leaders (a partition healed): the lower id keeps it.
          if (mode === "channel" && leader && m.from < me) stepDown();
          break;
        case "resign":
          lastLeaderHeard = 0;
          if (mode === "channel") claim();
          break;
        case "claim":
          if (mode === "channel" && claiming && m.from < me) claiming.lost = true;
          if (mode === "channel" && leader) send({ type: "leader" });
          break;
      }
    };
    setInterval(() => {
      send({ type: "here" });
      if (leader) send({ type: "leader" });
      role();
    }, PRESENCE_MS / 2);
    window.addEventListener("pagehide", () => {
      if (leader) send({ type: "resign" });
      send({ type: "bye" });
    });
  }

  // Without Web Locks: claim the lead, and keep it unless a lower claim
  // (or a leader) is heard while waiting.
  function claim() {
    if (leader || claiming) return;
    claiming = { lost: false };
    const since = Date.now();
    send({ type: "claim" });
    setTimeout(() => {
      const lost = claiming.lost || lastLeaderHeard > since;
      claiming = null;
      if (!lost) lead();
    }, CLAIM_WAIT_MS);
  }

  function elect() {
    if (mode === "alone") {
      lead();
      return;
    }
    send({ type: "hello" });
    if (mode === "locks") {
      navigator.locks.request(LOCK, () => {
        lead();
        return new Promise(() => {}); // held for the life of this tab
      });
      return;
    }
    lastLeaderHeard = 0;
    setTimeout(() => { if (!leader && Date.now() - lastLeaderHeard > TAKEOVER_MS) claim(); }, CLAIM_WAIT_MS);
    setInterval(() => {
      if (!leader && Date.now() - lastLeaderHeard > TAKEOVER_MS) claim();
    }, HEARTBEAT_MS);
  }

  // Another tab joined or left a room: the leader follows the new list.
  window.addEventListener("storage", (event) => {
    if (event.key !== ROOMS_KEY) return;
    emit("rooms", rooms());
    if (leader) openEvents();
  });

  window.SseShare = {
    on(kind, fn) { handlers[kind].push(fn); },
    get rooms() { return rooms(); },
    // Joins or leaves rooms: every tab of the browser follows.
    setRooms(list) {
      const clean = [...new Set(list)].filter((r) => /^[A-Za-z0-9_-]{1,32}$/.test(r));
      localStorage.setItem(ROOMS_KEY, JSON.stringify(clean.length ? clean : ["lobby"]));
      emit("rooms", rooms());
      if (leader) openEvents();
    },
    // Starts sharing, after the page has shown what it already had (the
    // chat history, up to event `shown`).
    start(shown) {
      if (shown !== null && shown !== undefined) newest = Number(shown);
      started = true;
      const relayed = pending;
      pending = [];
      relayed.forEach(deliver);
      elect();
      role();
    },
    get leader() { return leader; },
    get mode() { return mode; },
  };
})();
