// End-to-end tests of the demo page in a real Chromium (Debian's, driven by
// playwright-core, which downloads no browser). Run by tests/browser.rs as
// part of `cargo test`, with:
//   SSE_MIO_BIN  the built server binary
//   SSE_MIO_WWW  the www directory
//   CHROMIUM     the browser (default /usr/bin/chromium)
//   E2E_OUT      where the screenshot goes (default target/e2e)
// Each scenario starts its own servers on port 0 (or restarts one on the
// port it had) and stops them. Exit status 0 when every scenario passed.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

const BIN = process.env.SSE_MIO_BIN;
const WWW = process.env.SSE_MIO_WWW;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUT = process.env.E2E_OUT || "target/e2e";
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
/// How long any single wait in a scenario may take.
const WAIT = 15_000;

const servers = new Set();

/// Starts sse-mio with `args` on `port` (0: any) and resolves once its log
/// names the address.
function startServer(args, port = 0) {
  const proc = spawn(BIN, ["--addr", `127.0.0.1:${port}`, "--www", WWW, ...args], {
    env: { ...process.env, RUST_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  servers.add(proc);
  let log = "";
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), WAIT);
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const match = /http:\/\/(127\.0\.0\.1:(\d+))/.exec(log);
      if (match && timer) {
        clearTimeout(timer);
        resolve({
          url: `http://${match[1]}/`,
          port: Number(match[2]),
          log: () => log,
          // SIGTERM, and the exit status of the graceful shutdown.
          async stop() {
            proc.kill("SIGTERM");
            const status = await withTimeout(exited, WAIT, "server shutdown");
            servers.delete(proc);
            return status;
          },
        });
      }
    });
    proc.on("exit", () => reject(new Error(`server exited:\n${log}`)));
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/// Installed in every page before its scripts run: records every id the
/// page's event stream (its Mercure subscription; ids "#<n>", recorded as
/// n) delivers and every text the #state element
/// shows, so a test can check what the page went through, not only where
/// it ended up.
function recorder() {
  window.__e2e = { ids: [], states: [] };
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      if (new URL(url, location.href).pathname === "/.well-known/mercure") {
        this.addEventListener("message", (event) =>
          window.__e2e.ids.push(Number(event.lastEventId.replace(/^#/, ""))));
      }
    }
  };
  window.__e2e.shown = [];
  document.addEventListener("DOMContentLoaded", () => {
    const state = document.getElementById("state");
    if (!state) return;
    window.__e2e.states.push(state.textContent);
    new MutationObserver(() => window.__e2e.states.push(state.textContent))
      .observe(state, { childList: true, characterData: true, subtree: true });
    // Every id the page shows (ticker and chat), in the order it shows
    // them: a tab that follows another's stream has no EventSource of its
    // own to record.
    const shown = (records) => {
      for (const record of records) {
        for (const node of record.addedNodes) {
          if (node.dataset?.id) window.__e2e.shown.push(Number(node.dataset.id));
        }
      }
    };
    for (const id of ["messages", "chat-log"]) {
      new MutationObserver(shown).observe(document.getElementById(id), { childList: true });
    }
  });
}

/// A page with its console errors, uncaught exceptions and dialogs counted.
async function openPage(context, url) {
  const page = await context.newPage();
  page.problems = [];
  page.dialogs = [];
  page.on("console", (message) => {
    if (message.type() === "error") page.problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => page.problems.push(`exception: ${error.message}`));
  page.on("dialog", async (dialog) => {
    page.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  await page.goto(url);
  await waitState(page, "open");
  return page;
}

const waitState = (page, name) =>
  page.waitForFunction((n) => document.getElementById("state").textContent === n, name, { timeout: WAIT });

const ids = (page) => page.evaluate(() => window.__e2e.ids.slice());

/// The ids the page shows: the ticker (newest first) and the chat log.
const shownIds = (page) =>
  page.evaluate(() => ({
    ticks: [...document.querySelectorAll("#messages li .id")].map((e) => Number(e.textContent)),
    chat: [...document.querySelectorAll("#chat-log li[data-id]")].map((e) => Number(e.dataset.id)),
  }));

/// Sends a chat message through the page's form.
async function say(page, user, text, { enter = false } = {}) {
  await page.fill("#chat-user", user);
  await page.fill("#chat-text", text);
  if (enter) await page.press("#chat-text", "Enter");
  else await page.click("#chat-send");
}

/// Waits for a chat message with `text` and returns its id, user and text.
async function chatEntry(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#chat-log li .body")].some((b) => b.textContent === t),
    text,
    { timeout: WAIT },
  );
  return page.evaluate((t) => {
    const item = [...document.querySelectorAll("#chat-log li")]
      .find((li) => li.querySelector(".body")?.textContent === t);
    return {
      id: item.dataset.id,
      user: item.querySelector(".user").textContent,
      text: item.querySelector(".body").textContent,
    };
  }, text);
}

function assertConsecutive(list, what) {
  for (let i = 1; i < list.length; i++) {
    assert.equal(list[i], list[i - 1] + 1, `${what}: ${list[i - 1]} then ${list[i]} in ${list.join(",")}`);
  }
}

// ---- scenarios ------------------------------------------------------------

async function pageLoadsAndStreams(context, server) {
  const page = await openPage(context, server.url);
  await page.waitForFunction(() => document.querySelectorAll("#messages li").length >= 2, null, { timeout: WAIT });
  const { ticks } = await shownIds(page);
  // Newest first on the page.
  assert.ok(ticks.length >= 2, `ticks shown: ${ticks}`);
  for (let i = 1; i < ticks.length; i++) assert.ok(ticks[i - 1] > ticks[i], `increasing ids: ${ticks}`);
  assert.equal(await page.textContent("#last-id"), String(ticks[0]));
  assert.deepEqual(page.problems, [], "no console errors");
  return page;
}

async function chatReachesBothPages(context, server, first) {
  const second = await openPage(context, server.url);
  const text = `hello from the first page ${Date.now()}`;
  await say(first, "alice", text);
  const [a, b] = await Promise.all([chatEntry(first, text), chatEntry(second, text)]);
  assert.deepEqual(a, b, "the same message on both pages");
  assert.equal(a.user, "alice");
  assert.ok(Number(a.id) > 0);
  assert.equal(await first.inputValue("#chat-text"), "", "the form is cleared after sending");
  assert.deepEqual(second.problems, []);
  return second;
}

async function markupIsText(first, second) {
  const text = "<img src=x onerror=alert(1)>";
  await say(first, "mallory", text, { enter: true });
  for (const page of [first, second]) {
    const entry = await chatEntry(page, text);
    assert.equal(entry.text, text);
    assert.equal(await page.locator("#chat-log img").count(), 0, "no element was made from the text");
    assert.deepEqual(page.dialogs, [], "no dialog opened");
  }
}

async function laterPageShowsHeldChat(context, server, first) {
  // Everything the first page shows of the chat so far.
  const earlier = await first.evaluate(() =>
    [...document.querySelectorAll("#chat-log li[data-id]")].map((li) => ({
      id: li.dataset.id,
      text: li.querySelector(".body").textContent,
    })),
  );
  assert.ok(earlier.length >= 2, `chat so far: ${JSON.stringify(earlier)}`);
  const late = await openPage(context, server.url);
  const shown = await late.evaluate(() =>
    [...document.querySelectorAll("#chat-log li[data-id]")].map((li) => ({
      id: li.dataset.id,
      text: li.querySelector(".body").textContent,
    })),
  );
  assert.deepEqual(shown.slice(0, earlier.length), earlier, "the held chat, oldest first, with its ids");
  assert.equal(await late.locator("#chat-log .empty").count(), 0, "no 'no messages yet' note");
  // The stream goes on from right after the newest id: no id twice.
  const text = `after the history ${Date.now()}`;
  await say(first, "bob", text);
  const entry = await chatEntry(late, text);
  const ids = (await shownIds(late)).chat;
  assert.equal(new Set(ids).size, ids.length, `each id once: ${ids}`);
  assert.ok(Number(entry.id) > Number(earlier.at(-1).id));
  const delivered = await late.evaluate(() => window.__e2e.ids.slice());
  assert.ok(delivered.every((id) => id > Number(earlier.at(-1).id)), `the stream starts after the history: ${delivered}`);
  assert.deepEqual(late.problems, []);
  await late.close();
}

async function dashboardUpdates(page) {
  const uptime = () => page.textContent("#dash-uptime");
  await page.waitForFunction(() => /^\d+ s$/.test(document.getElementById("dash-uptime").textContent), null, { timeout: WAIT });
  const before = await uptime();
  await page.waitForFunction((b) => document.getElementById("dash-uptime").textContent !== b, before, { timeout: WAIT });
  // The browser's tabs share one stream.
  const streams = Number(await page.textContent("#dash-streams"));
  assert.equal(streams, 1, `streams on the dashboard: ${streams}`);
  assert.match(await page.textContent("#dash-fanout"), /^\d+\.\d\d ms$/);
  assert.equal(await page.textContent("#dash-state"), "live");
  assert.equal(await page.locator("#spark-connections polyline").count(), 1);
  assert.equal(await page.locator("#spark-connections text.placeholder").count(), 0, "the placeholder is gone");
  assert.match(await page.textContent("#spark-connections-max"), /^max \d+$/);
  assert.match(await page.textContent("#spark-fanout-max"), /^max \d+\.\d\d ms$/);
}

async function emptyChatSaysSo(context) {
  const server = await startServer(["--interval", "1h"]);
  try {
    const page = await openPage(context, server.url);
    assert.equal(await page.textContent("#chat-log .empty"), "No messages yet: say hello.");
    // Before any stats frame, the sparklines wait with a placeholder.
    assert.equal(await page.locator("#spark-connections text.placeholder").count(), 1);
    await page.close();
  } finally {
    await server.stop();
  }
}

async function restartOnTheSamePort(page, server, args) {
  const before = await ids(page);
  const status = await server.stop();
  assert.equal(status.code, 0, `graceful exit:\n${server.log()}`);
  await page.waitForFunction(() => window.__e2e.states.at(-1) === "reconnecting", null, { timeout: WAIT });
  const restarted = await startServer(args, server.port);
  await waitState(page, "open");
  const last = before.at(-1);
  await page.waitForFunction((l) => window.__e2e.ids.at(-1) > l, last, { timeout: WAIT });
  const states = await page.evaluate(() => window.__e2e.states.slice());
  const reconnecting = states.lastIndexOf("reconnecting");
  assert.ok(reconnecting >= 0 && states.indexOf("open", reconnecting) > reconnecting, `states: ${states}`);
  return restarted;
}

async function resumeWithoutLoss(context) {
  const server = await startServer(["--interval", "200ms", "--retry", "100ms", "--stream-lifetime", "1s"]);
  try {
    const page = await openPage(context, server.url);
    // Waits until the page has shown "reconnecting" at least `n` times.
    const reconnected = (n) => page.waitForFunction(
      (m) => window.__e2e.states.filter((s) => s === "reconnecting").length >= m,
      n,
      { timeout: WAIT },
    );
    // Chat messages in between, posted from the page.
    for (let i = 0; i < 3; i++) {
      await reconnected(i + 1);
      const status = await page.evaluate((n) => fetch("/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user: "resume", text: `message ${n}` }),
      }).then((r) => r.status), i);
      assert.equal(status, 202);
    }
    await reconnected(4);
    await waitState(page, "open");
    // What the page received and what it shows, taken together at a
    // moment when they agree: ids arrive every 200 ms and the page draws
    // each a moment after it is received, so two separate reads could
    // catch one in between. If they never agree, this times out and fails.
    const agreed = await page.waitForFunction(() => {
      const got = window.__e2e.ids.slice();
      const shown = {
        ticks: [...document.querySelectorAll("#messages li .id")].map((e) => Number(e.textContent)),
        chat: [...document.querySelectorAll("#chat-log li[data-id]")].map((e) => Number(e.dataset.id)),
      };
      const all = [...shown.ticks, ...shown.chat].sort((a, b) => a - b);
      const same = all.length === got.length && all.every((id, i) => id === got[i]);
      return same && { got, shown };
    }, null, { timeout: WAIT });
    const { got, shown } = await agreed.jsonValue();
    assertConsecutive(got, "ids delivered to the page");
    assert.equal(shown.chat.length, 3, `chat shown: ${shown.chat}`);
    const all = [...shown.ticks, ...shown.chat].sort((a, b) => a - b);
    assertConsecutive(all, "ids shown on the page");
    assert.deepEqual(all, got, "the page shows every id it received, once");
    assert.equal(await page.locator("#chat-log .notice").count(), 0, "no reset notice");
    assert.deepEqual(page.problems, []);
    const states = await page.evaluate(() => window.__e2e.states);
    return { reconnects: states.filter((s) => s === "reconnecting").length, ids: got.length };
  } finally {
    await server.stop();
  }
}

// ---- many tabs, one connection ------------------------------------------------

/// The server's streams right now, events and stats together, from its
/// /metrics (gauges refreshed four times a second).
async function streamsOpen(server) {
  const text = await (await fetch(server.url + "metrics")).text();
  const gauge = (state) => Number(new RegExp(`^sse_mio_connections\\{state="${state}"\\} (\\d+)$`, "m").exec(text)[1]);
  return gauge("streaming") + gauge("stats");
}

/// Polls `check` until it holds, or fails after WAIT.
async function eventually(what, check) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const shownFrom = (page, from) => page.evaluate((f) => window.__e2e.shown.slice(f), from);
const shownCount = (page) => page.evaluate(() => window.__e2e.shown.length);
const isLeader = (page) => page.evaluate(() => window.SseShare.leader);

/// Opens `n` tabs; every one shows ticks. Returns them.
async function openTabs(context, server, n) {
  const pages = [];
  for (let i = 0; i < n; i++) pages.push(await openPage(context, server.url));
  for (const page of pages) {
    await page.waitForFunction(() => document.querySelectorAll("#messages li").length >= 2, null, { timeout: WAIT });
  }
  return pages;
}

/// Every page showed consecutive ids, each once, from the marks on.
async function allConsecutive(pages, marks, what) {
  for (const [i, page] of pages.entries()) {
    const ids = await shownFrom(page, marks[i]);
    assert.ok(ids.length >= 3, `${what}: tab ${i} showed ${ids}`);
    assertConsecutive(ids, `${what}, tab ${i}`);
  }
}

async function tenTabsShareOneConnection(context, server) {
  const pages = await openTabs(context, server, 10);
  let most = 0;
  await eventually("the gauges to count the tabs' streams", async () => {
    const streams = await streamsOpen(server);
    most = Math.max(most, streams);
    return streams >= 1;
  });
  for (let i = 0; i < 5; i++) {
    most = Math.max(most, await streamsOpen(server));
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.ok(most <= 2, `streams open for 10 tabs: ${most}`);
  assert.equal((await Promise.all(pages.map(isLeader))).filter(Boolean).length, 1, "one leader");
  const text = `from tab 7 ${Date.now()}`;
  await say(pages[6], "tab7", text);
  const entries = await Promise.all(pages.map((page) => chatEntry(page, text)));
  assert.ok(entries.every((e) => e.id === entries[0].id), `the same id everywhere: ${entries.map((e) => e.id)}`);
  assert.match(await pages[3].textContent("#shared"), /^shared by 10 tabs; another tab holds the connection$/);
  for (const page of pages) assert.deepEqual(page.problems, []);
  return { tabs: pages.length, mostStreams: most, pages };
}

/// The leader goes away (`how`: close or reload): another tab leads at
/// once, and every tab shows every id once, in order.
async function handOver(pages, how) {
  const marks = await Promise.all(pages.map(shownCount));
  const roles = await Promise.all(pages.map(isLeader));
  const old = roles.indexOf(true);
  assert.ok(old >= 0, "a leader");
  const started = Date.now();
  let rest = pages;
  if (how === "close") {
    await pages[old].close();
    rest = pages.filter((_, i) => i !== old);
    marks.splice(old, 1);
  } else {
    await pages[old].reload();
    await waitState(pages[old], "open");
    // The reloaded tab starts over: its chat history first, then live ids.
    marks[old] = await shownCount(pages[old]);
  }
  await eventually("a new leader", async () => (await Promise.all(rest.map(isLeader))).some(Boolean));
  const took = Date.now() - started;
  const later = await Promise.all(rest.map(shownCount));
  await eventually("new ticks on every tab", async () =>
    (await Promise.all(rest.map(shownCount))).every((n, i) => n >= later[i] + 3));
  await allConsecutive(rest, marks, `after the leader's ${how}`);
  return { rest, leaderAfterMs: took };
}

async function withoutWebLocks(browser) {
  const server = await startServer(["--interval", "200ms", "--retry", "500ms"]);
  const context = await browser.newContext();
  try {
    await context.addInitScript(recorder);
    await context.addInitScript(() => { delete Navigator.prototype.locks; });
    const pages = await openTabs(context, server, 10);
    assert.equal(await pages[0].evaluate(() => window.SseShare.mode), "channel");
    await eventually("one leader elected over the channel", async () =>
      (await Promise.all(pages.map(isLeader))).filter(Boolean).length === 1);
    let most = 0;
    for (let i = 0; i < 5; i++) {
      most = Math.max(most, await streamsOpen(server));
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(most <= 2, `streams open for 10 tabs: ${most}`);
    const { leaderAfterMs } = await handOver(pages, "close");
    return { mostStreams: most, leaderAfterMs };
  } finally {
    await context.close();
    await server.stop();
  }
}

async function withoutBroadcastChannel(browser) {
  const server = await startServer(["--interval", "200ms"]);
  const context = await browser.newContext();
  try {
    await context.addInitScript(recorder);
    await context.addInitScript(() => { delete window.BroadcastChannel; });
    const pages = await openTabs(context, server, 2);
    for (const page of pages) {
      assert.equal(await isLeader(page), true, "each tab has its own streams");
      assert.match(await page.textContent("#shared"), /^this tab only/);
    }
    await eventually("two tabs' streams", async () => (await streamsOpen(server)) === 4);
    return { tabs: 2 };
  } finally {
    await context.close();
    await server.stop();
  }
}


/// The page at a laptop's size and a phone's: the stream (its state and
/// the newest tick), the chat (its log and its Send button) and the figures
/// (connections) all in view without scrolling, nothing wider than the
/// window; a screenshot of each, `target/e2e/page-<w>x<h>.png`.
async function layoutAtSizes(context, server) {
  const shots = [];
  for (const [width, height] of [[1280, 800], [390, 844]]) {
    const page = await context.newPage();
    page.problems = [];
    page.on("pageerror", (error) => page.problems.push(`exception: ${error.message}`));
    await page.setViewportSize({ width, height });
    await page.goto(server.url);
    await waitState(page, "open");
    await page.waitForFunction(() => document.querySelectorAll("#messages li").length >= 2, null, { timeout: WAIT });
    await page.waitForFunction(() => document.getElementById("dash-connections").textContent !== "–", null, { timeout: WAIT });
    const view = await page.evaluate(() => {
      const seen = (selector) => {
        const r = document.querySelector(selector).getBoundingClientRect();
        return r.width > 0 && r.top >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth;
      };
      return {
        stream: seen("#state") && seen("#messages li"),
        chat: seen("#chat-log") && seen("#chat-send"),
        figures: seen("#dash-connections"),
        sideways: document.documentElement.scrollWidth > window.innerWidth,
      };
    });
    assert.deepEqual(view, { stream: true, chat: true, figures: true, sideways: false }, `${width}x${height}`);
    const path = join(OUT, `page-${width}x${height}.png`);
    await page.screenshot({ path });
    assert.deepEqual(page.problems, []);
    await page.close();
    shots.push(`page-${width}x${height}.png`);
  }
  return { shots };
}

// ---- rooms and the Mercure hub ------------------------------------------------

/// Two browsers (two profiles: tabs of one browser share their rooms):
/// the first joins "kitchen" and writes there; the second, in the lobby
/// only, never sees it, and both see the lobby; the room list counts the
/// streams that follow each room.
async function roomsKeepTheirMessages(browser) {
  const server = await startServer(["--interval", "1h"]);
  const contexts = [await browser.newContext(), await browser.newContext()];
  try {
    for (const c of contexts) await c.addInitScript(recorder);
    const [cook, guest] = await Promise.all(contexts.map((c) => openPage(c, server.url)));
    await cook.fill("#room-name", "kitchen");
    await cook.click("#room-form button");
    await cook.waitForFunction(() => document.getElementById("chat-room").textContent === "kitchen", null, { timeout: WAIT });
    await waitState(cook, "open");
    // The dashboard counts the kitchen's stream (once a second).
    await cook.waitForFunction(
      () => document.querySelector('#rooms li[data-room="kitchen"] .count')?.textContent === "1",
      null,
      { timeout: WAIT },
    );
    const secret = `only for the kitchen ${Date.now()}`;
    await say(cook, "cook", secret);
    const entry = await chatEntry(cook, secret);
    assert.equal(await cook.textContent(`#chat-log li[data-id="${entry.id}"] .room`), "kitchen");
    // Back to the lobby, still following the kitchen: the guest sees this one.
    await cook.click('#rooms li[data-room="lobby"] button');
    const marker = `for everyone ${Date.now()}`;
    await say(cook, "cook", marker);
    await chatEntry(guest, marker);
    const texts = await guest.evaluate(() => [...document.querySelectorAll("#chat-log li .body")].map((b) => b.textContent));
    assert.ok(!texts.includes(secret), `the guest saw the kitchen: ${texts}`);
    // A page opened later in the cook's browser shows the kitchen's history.
    const later = await openPage(contexts[0], server.url);
    await chatEntry(later, secret);
    for (const page of [cook, guest, later]) assert.deepEqual(page.problems, []);
    return { rooms: await cook.evaluate(() => [...document.querySelectorAll("#rooms li")].map((li) => li.dataset.room)) };
  } finally {
    for (const c of contexts) await c.close();
    await server.stop();
  }
}

const HUB = "https://localhost/.well-known/mercure";
const KEY = randomBytes(32).toString("hex");

/// An HS256 access token (typ at+jwt), signed here with node:crypto.
function token(claims) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "at+jwt" })}.${b64({ aud: HUB, exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${body}.${createHmac("sha256", KEY).update(body).digest("base64url")}`;
}

/// The Mercure conformance suite's cases (spec/mercure.md's own suite,
/// conformance-tests/, rewritten here): for each, the page at / opens an
/// EventSource on the topic selectors, publishes with a token that may
/// publish everywhere and a custom id, and says whether the update came
/// (with its id and data), and what the publish answered.
async function conformance(context) {
  const server = await startServer(["--interval", "1h", "--jwt-key", KEY, "--hub-url", HUB]);
  const random = () => randomBytes(20).toString("hex");
  const r = Array.from({ length: 5 }, random);
  const cases = [
    ["raw string", true, [r[0]], [r[0]]],
    ["multiple topic selectors", true, [r[1]], ["foo", r[1]]],
    ["URI", true, [`https://example.net/foo/${r[2]}`], [`https://example.net/foo/${r[2]}`]],
    ["URL pattern", true, [`https://example.net/foo/${r[3]}`], ["https://example.net/foo/:random"]],
    ["nonmatching raw string", false, ["will-not-match"], ["another-name"]],
    ["nonmatching URI", false, ["https://example.net/foo/will-not-match"], ["https://example.net/foo/another-name"]],
    ["nonmatching URL pattern", false, ["https://example.net/foo/will-not-match"], ["https://example.net/bar/:var"]],
    ["private raw string", false, [r[0]], [r[0]], true],
    ["private URI", false, [`https://example.net/foo/${r[2]}`], [`https://example.net/foo/${r[2]}`], true],
    ["private URL pattern", false, [`https://example.net/foo/${r[3]}`], ["https://example.net/foo/:random"], true],
  ];
  const publisher = token({
    authorization_details: [
      { type: "https://mercure.rocks/authorization-detail", actions: ["publish"], topics: [{ match: "*" }] },
    ],
  });
  const page = await context.newPage();
  try {
    const results = [];
    for (const [name, mustBeReceived, topics, selectors, isPrivate] of cases) {
      await page.goto(server.url);
      const id = `id-${JSON.stringify(topics)}-${random()}`;
      const got = await page.evaluate(
        async ({ topics, selectors, isPrivate, id, publisher, name }) => {
          const url = new URL("/.well-known/mercure", location.origin);
          for (const s of selectors) url.searchParams.append(/\/:[A-Za-z_]/.test(s) ? "match_urlpattern" : "match", s);
          const update = new URLSearchParams();
          for (const t of topics) update.append("topic", t);
          update.set("id", id);
          update.set("data", `data for\n\n        ${name}`);
          if (isPrivate) update.set("private", "on");
          const es = new EventSource(url);
          await new Promise((resolve) => (es.onopen = resolve));
          const received = new Promise((resolve) => {
            es.onmessage = (e) => {
              if (e.lastEventId === id && e.data === update.get("data")) resolve(true);
            };
            setTimeout(() => resolve(false), 1500);
          });
          const response = await fetch("/.well-known/mercure", {
            method: "POST",
            headers: { Authorization: `Bearer ${publisher}` },
            body: update,
          });
          const body = await response.text();
          const result = { received: await received, status: response.status, type: response.headers.get("Content-Type"), body };
          es.close();
          return result;
        },
        { topics, selectors, isPrivate: !!isPrivate, id, publisher, name },
      );
      assert.equal(got.received, mustBeReceived, `${name}: received`);
      assert.equal(got.status, 200, `${name}: ${got.body}`);
      assert.match(got.type, /^text\/plain(?:$|;.*)/, name);
      assert.equal(got.body, id, `${name}: the custom id`);
      results.push(name);
    }
    return { cases: results.length };
  } finally {
    await page.close();
    await server.stop();
  }
}

// ---- runner -----------------------------------------------------------------

async function main() {
  assert.ok(BIN && WWW, "SSE_MIO_BIN and SSE_MIO_WWW must be set");
  const userDataDir = mkdtempSync(join(tmpdir(), "sse-mio-e2e-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
  });
  await context.addInitScript(recorder);
  const args = ["--interval", "200ms", "--retry", "200ms"];
  let server = await startServer(args);
  const results = [];
  const run = async (name, body) => {
    const start = Date.now();
    const detail = await body();
    results.push({ name, ms: Date.now() - start, detail });
    console.log(`ok   ${name} (${Date.now() - start} ms)${detail ? " " + JSON.stringify(detail) : ""}`);
    return detail;
  };
  const started = Date.now();
  try {
    let first, second;
    await run("1. the page loads, the stream opens, ticks appear", async () => {
      first = await pageLoadsAndStreams(context, server);
    });
    await run("2. a message from one page appears on both", async () => {
      second = await chatReachesBothPages(context, server, first);
    });
    await run("7. a screenshot of the page with its chat", async () => {
      mkdirSync(OUT, { recursive: true });
      await first.screenshot({ path: join(OUT, "page.png"), fullPage: true });
    });
    await run("3. markup in a message shows as text, no dialog", () => markupIsText(first, second));
    // Each page holds two long-lived connections (/sse and /stats) of the
    // six a browser allows per host: with three pages open, a POST would
    // wait for a free one.
    await second.close();
    await run("8. a page opened later shows the chat the server holds, then the stream", () =>
      laterPageShowsHeldChat(context, server, first));
    await run("6. the dashboard's figures update", () => dashboardUpdates(first));
    await run("5. a restart on the same port: reconnecting, then open", async () => {
      server = await restartOnTheSamePort(first, server, args);
    });
    await first.close();
    await run("4. resume without loss across stream lifetimes", () => resumeWithoutLoss(context));
    await run("9. an empty chat and a dashboard before its first figures say so", () => emptyChatSaysSo(context));
    const tabsServer = await startServer(["--interval", "200ms", "--retry", "500ms"]);
    try {
      let pages;
      await run("10. ten tabs share one connection; chat from tab 7 reaches all", async () => {
        const result = await tenTabsShareOneConnection(context, tabsServer);
        pages = result.pages;
        return { tabs: result.tabs, mostStreams: result.mostStreams };
      });
      await run("11. the leader tab closes: another leads, no gap, no duplicate", async () => {
        const result = await handOver(pages, "close");
        pages = result.rest;
        return { leaderAfterMs: result.leaderAfterMs };
      });
      await run("12. the leader tab reloads: the same", async () => {
        const result = await handOver(pages, "reload");
        return { leaderAfterMs: result.leaderAfterMs };
      });
      for (const page of pages) await page.close();
    } finally {
      await tabsServer.stop();
    }
    const browser = context.browser() ?? (await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS }));
    try {
      await run("13. without Web Locks the tabs elect over the channel", () => withoutWebLocks(browser));
      await run("14. without BroadcastChannel each tab has its own streams", () => withoutBroadcastChannel(browser));
      await run("15. rooms: a room's messages reach only the browsers that follow it", () => roomsKeepTheirMessages(browser));
    } finally {
      if (!context.browser()) await browser.close();
    }
    await run("17. at 1280x800 and 390x844 the stream, the chat and the figures are in view", () =>
      layoutAtSizes(context, server));
    await run("16. the Mercure conformance cases: routing, URL patterns, private updates, custom ids", () => conformance(context));
  } finally {
    await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
    await server.stop().catch(() => {});
  }
  console.log(`all ${results.length} scenarios passed in ${Date.now() - started} ms; screenshot: ${join(OUT, "page.png")}`);
}

process.on("exit", () => {
  for (const proc of servers) proc.kill("SIGKILL");
});

main().catch((error) => {
  console.error(`FAILED: ${error.stack || error}`);
  process.exit(1);
});
