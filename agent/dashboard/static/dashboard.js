// Hotline dashboard: keep the live-calls table current, stream a live call's events into its view, and
// play a live call's audio (listen-in).
// Text goes in with textContent only (never innerHTML), so nothing a caller says becomes markup.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function clock(seconds) {  // m:ss, as the server writes durations
  const s = Math.max(0, Math.floor(seconds));
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}

// The live-calls table follows /dashboard/live: a snapshot of every worker's live calls whenever one
// starts, ends, changes state or is tagged. Durations tick here; a lost socket reconnects.
function followLiveCalls(table) {
  const body = table.querySelector("tbody");
  const status = document.getElementById("live-status");
  let calls = [], skew = 0;  // skew: the server's clock minus ours
  function render() {
    const now = Date.now() / 1000 + skew;
    calls.sort((a, b) => String(a.number).localeCompare(String(b.number)) || a.started_at - b.started_at);
    body.replaceChildren(...calls.map((c) => {
      const row = el("tr");
      const link = el("a", c.call_id);
      link.href = "/dashboard/calls/" + encodeURIComponent(c.call_id);
      const first = el("td"); first.appendChild(link); row.appendChild(first);
      const lasted = typeof c.started_at === "number" ? clock(now - c.started_at) : c.duration;
      for (const v of [c.number, c.caller, c.bot, c.worker, c.state, lasted, (c.tags || []).join(", ")]) {
        row.appendChild(el("td", v));
      }
      return row;
    }));
    if (status) status.textContent = calls.length + " live call(s).";
  }
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + window.location.host + "/dashboard/live");
    ws.onmessage = (message) => {
      const data = JSON.parse(message.data);
      calls = data.calls || [];
      if (typeof data.now === "number") skew = data.now - Date.now() / 1000;
      render();
    };
    ws.onclose = (event) => {
      if (event.code === 1008) { window.location.href = "/dashboard/login"; return; }
      if (status) status.textContent = "connection lost; reconnecting…";
      setTimeout(connect, 2000);
    };
  }
  connect();
  setInterval(render, 1000);
}

// A caller turn after the handoff, in another language than the agents': its interpretation (or why
// there is none) beside the original, as the past-call transcript shows it.
function interpretation(d) {
  const i = d.interpretation;
  if (!i || typeof i !== "object") return "";
  const head = "  [" + i.from + " → " + i.to + "] ";
  return i.text ? head + i.text : head + "no interpretation available (" + i.unavailable + ")";
}

function describe(event) {
  const d = event.data || {};
  switch (event.kind) {
    case "transcript.partial": return ["partial", "… " + d.text];
    case "turn": return [d.role || "caller", (d.role || "caller") + ": " + d.text + interpretation(d)];
    case "language": return ["language", "language: " + d.language + " (p " + d.probability + ", " + (d.supported ? "answered in it" : "no voice") + ")"];
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

// Listen-in: /dashboard/listen/<call> sends binary packets: [channel (0 caller, 1 bot, 255 end), 0,
// sample rate (uint16 LE)] + 16-bit LE PCM. Each channel is scheduled on its own lane a little ahead
// of the audio clock (jitter buffer), and both are mixed to the speakers. window.hotlineListen holds
// counters (seconds received per channel, output level) for whoever wants to check it is working.
const LISTEN_AHEAD_S = 0.15, LISTEN_MAX_LAG_S = 2.0;

function listenIn(button) {
  const callId = button.dataset.call;
  const status = document.getElementById("listen-status");
  const stats = { packets: 0, dropped: 0, seconds: [0, 0], level: 0, peak: 0, ended: false };
  window.hotlineListen = stats;
  let ws = null, ctx = null, meter = null;
  function say(text) { if (status) status.textContent = text; }
  function stop(why) {
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    if (meter) { clearInterval(meter); meter = null; }
    if (ctx) { ctx.close(); ctx = null; }
    button.textContent = "Listen in";
    say(why);
  }
  button.addEventListener("click", async () => {
    if (ws) { stop("stopped listening"); return; }
    ctx = new AudioContext();
    await ctx.resume();
    const mix = ctx.createGain();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    mix.connect(analyser);
    analyser.connect(ctx.destination);
    const window_ = new Float32Array(analyser.fftSize);
    meter = setInterval(() => {
      analyser.getFloatTimeDomainData(window_);
      let sum = 0;
      for (const v of window_) sum += v * v;
      stats.level = Math.sqrt(sum / window_.length);
      stats.peak = Math.max(stats.peak, stats.level);
    }, 50);
    const lanes = [0, 0];
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + window.location.host + "/dashboard/listen/" + encodeURIComponent(callId));
    ws.binaryType = "arraybuffer";
    ws.onmessage = (message) => {
      if (!ctx || !(message.data instanceof ArrayBuffer) || message.data.byteLength < 4) return;
      const head = new DataView(message.data, 0, 4);
      const channel = head.getUint8(0), rate = head.getUint16(2, true);
      if (channel === 255) { stats.ended = true; stop("the call ended"); return; }
      const n = (message.data.byteLength - 4) >> 1;
      if (n === 0) return;
      const lane = channel === 0 ? 0 : 1;
      const now = ctx.currentTime;
      if (lanes[lane] - now > LISTEN_MAX_LAG_S) { stats.dropped++; return; }  // keep the delay bounded
      const pcm = new Int16Array(message.data, 4, n);
      const buffer = ctx.createBuffer(1, n, rate);
      const out = buffer.getChannelData(0);
      for (let i = 0; i < n; i++) out[i] = pcm[i] / 32768;
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(mix);
      const at = Math.max(lanes[lane], now + LISTEN_AHEAD_S);
      source.start(at);
      lanes[lane] = at + buffer.duration;
      stats.packets++;
      stats.seconds[lane] += buffer.duration;
      say("listening: caller " + stats.seconds[0].toFixed(1) + " s, bot " + stats.seconds[1].toFixed(1) + " s");
    };
    ws.onclose = (event) => stop(event.reason || "listening ended");
    button.textContent = "Stop listening";
    say("connecting…");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const listen = document.getElementById("listen");
  if (listen) listenIn(listen);
  const table = document.getElementById("live-calls");
  if (table) followLiveCalls(table);
  const transcript = document.querySelector("[data-live-call]");
  if (transcript) followCall(transcript);
});
