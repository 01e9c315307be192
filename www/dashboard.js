// The dashboard: figures from the server's /stats stream (one `stats`
// event a second, received by the tab that holds the browser's connection
// and relayed to the others) and two inline SVG sparklines of the last three minutes,
// each with its scale (the largest value shown), a flat series drawn at
// mid-height, and a placeholder until there are points to draw.
"use strict";

(() => {
  const POINTS = 180;
  const history = { connections: [], fanoutMs: [] };
  const set = (id, text) => { document.getElementById(id).textContent = text; };
  const stateEl = document.getElementById("dash-state");

  // `format` writes a value with its unit, for the scale.
  function spark(id, values, format) {
    const svg = document.getElementById(id);
    const scale = document.getElementById(id + "-max");
    const placeholder = svg.querySelector("text");
    if (values.length < 2) {
      scale.textContent = "";
      return; // the placeholder stays until there is a line to draw
    }
    placeholder?.remove();
    const max = Math.max(...values);
    const min = Math.min(...values);
    const step = 300 / (POINTS - 1);
    const offset = POINTS - values.length;
    // A flat series is a line at mid-height, not one glued to the top.
    const y = (v) => (max === min ? 20 : 38 - (v / max) * 36);
    const points = values
      .map((v, i) => `${((offset + i) * step).toFixed(1)},${y(v).toFixed(1)}`)
      .join(" ");
    let line = svg.querySelector("polyline");
    if (!line) {
      line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", "currentColor");
      line.setAttribute("stroke-width", "1.5");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(line);
    }
    line.setAttribute("points", points);
    svg.setAttribute("data-max", String(max));
    scale.textContent = "max " + format(max);
  }

  function push(list, value) {
    list.push(value);
    if (list.length > POINTS) list.shift();
  }

  // The /stats stream, shared by the browser's tabs like /sse (share.js).
  SseShare.on("statsState", (name) => {
    stateEl.textContent = name;
    stateEl.className = "state " + (name === "live" ? "open" : name);
  });
  SseShare.on("stats", (data) => {
    let s;
    try { s = JSON.parse(data); } catch { return; }
    set("dash-connections", String(s.connections));
    set("dash-streams", String(s.streams));
    set("dash-eps", s.eventsPerSecond.toFixed(1));
    set("dash-fanout", s.fanoutMs.toFixed(2) + " ms");
    set("dash-rss", (s.rssBytes / 1048576).toFixed(1) + " MiB");
    set("dash-uptime", Math.floor(s.uptime) + " s");
    // With --redis: whether the instance follows the shared log, whether
    // it is the one that ticks for all, and how far behind it is.
    const row = document.getElementById("dash-backplane-row");
    row.hidden = !s.backplane;
    if (s.backplane) {
      const b = s.backplane;
      set("dash-backplane", b.connected
        ? "Redis connected" + (b.ticker ? ", ticks for all" : "") + (b.lag ? `, ${b.lag} behind` : "")
        : "Redis unreachable, reconnecting");
    }
    push(history.connections, s.connections);
    push(history.fanoutMs, s.fanoutMs);
    spark("spark-connections", history.connections, (v) => String(v));
    spark("spark-fanout", history.fanoutMs, (v) => v.toFixed(2) + " ms");
  });
})();
