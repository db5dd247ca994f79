// Hotline dashboard: refresh the live-calls table, and stream a live call's events into its view.
// Text goes in with textContent only (never innerHTML), so nothing a caller says becomes markup.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function pollLiveCalls(table) {
  const body = table.querySelector("tbody");
  const status = document.getElementById("live-status");
  async function refresh() {
    try {
      const answer = await fetch("/dashboard/live.json", { credentials: "same-origin", cache: "no-store" });
      if (answer.status === 401) { window.location.href = "/dashboard/login"; return; }
      const data = await answer.json();
      body.replaceChildren(...data.calls.map((c) => {
        const row = el("tr");
        const link = el("a", c.call_id);
        link.href = "/dashboard/calls/" + encodeURIComponent(c.call_id);
        const first = el("td"); first.appendChild(link); row.appendChild(first);
        for (const v of [c.caller, c.bot, c.worker, c.state, c.duration, (c.tags || []).join(", ")]) {
          row.appendChild(el("td", v));
        }
        return row;
      }));
      if (status) status.textContent = data.calls.length + " live call(s).";
    } catch (err) {
      if (status) status.textContent = "refresh failed; retrying…";
    }
  }
  setInterval(refresh, 2000);
}

function describe(event) {
  const d = event.data || {};
  switch (event.kind) {
    case "transcript.partial": return ["partial", "… " + d.text];
    case "turn": return [d.role || "caller", (d.role || "caller") + ": " + d.text];
    case "signals": return ["signals", "sentiment " + d.sentiment + " (rolling " + d.sentiment_rolling + ")"];
    case "escalation": return ["escalation", "escalation: " + (d.rule || JSON.stringify(d))];
    case "action": return ["action", "action: " + JSON.stringify(d.payload) + " — " + JSON.stringify(d.reason)];
    case "supervisor": return ["supervisor", "supervisor " + d.user + ": " + d.action + (d.department ? " → " + d.department : "")];
    case "call.ended": return ["ended", "call ended: " + d.reason];
    default: return null;
  }
}

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg", w = 160, h = 32;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", h);
  const pad = 4, step = (w - 2 * pad) / Math.max(values.length - 1, 1);
  const xy = values.map((v, i) => [pad + i * step, pad + (1 - (Math.max(-1, Math.min(1, v)) + 1) / 2) * (h - 2 * pad)]);
  const zero = document.createElementNS(ns, "line");
  zero.setAttribute("class", "zero");
  zero.setAttribute("x1", 0); zero.setAttribute("x2", w); zero.setAttribute("y1", h / 2); zero.setAttribute("y2", h / 2);
  svg.appendChild(zero);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" "));
  svg.appendChild(line);
  for (const [x, y] of xy) {
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", x.toFixed(1)); dot.setAttribute("cy", y.toFixed(1)); dot.setAttribute("r", 2.5);
    svg.appendChild(dot);
  }
  return svg;
}

function followCall(transcript) {
  const callId = transcript.dataset.liveCall;
  const events = document.getElementById("events");
  const box = document.getElementById("sentiment");
  const sentiments = [];
  const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + window.location.host + "/dashboard/live/" + encodeURIComponent(callId));
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const shown = describe(event);
    if (!shown) return;
    if (event.kind === "signals" && typeof event.data.sentiment === "number") {
      sentiments.push(event.data.sentiment);
      if (box) box.replaceChildren(sparkline(sentiments));
    }
    events.appendChild(el("li", shown[1], shown[0]));
    if (event.kind === "call.ended") setTimeout(() => window.location.reload(), 1500);
  };
  ws.onclose = () => events.appendChild(el("li", "live view closed", "muted"));
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("live-calls");
  if (table) pollLiveCalls(table);
  const transcript = document.querySelector("[data-live-call]");
  if (transcript) followCall(transcript);
});
