// Time-series charts drawn as SVG: stacked panels sharing one time axis, each with its own
// value scale. Hover shows every panel's value at the cursor; drag selects a range to zoom
// into; double-click zooms back out. Markers (vertical lines), bands (shaded ranges),
// levels (horizontal segments) and points (highlighted bars) annotate the series.

import { clear, displayText, h } from "./util.js";

const SVG = "http://www.w3.org/2000/svg";
const MARGIN = { left: 64, right: 16, top: 4, bottom: 22 };
const PANEL_GAP = 6;
const TITLE_H = 14;

function s(tag, attrs = {}, parent) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  if (parent) parent.append(el);
  return el;
}

export const ms = (iso) => Date.parse(iso);

function niceTicks(min, max, count) {
  if (!(max > min)) return [min];
  const raw = ((max / 2 - min / 2) / count) * 2; // halves first: max - min may overflow near ±1e308
  const nice = [1, 2, 2.5, 5, 10].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((v) => v >= raw);
  const step = Number.isFinite(nice) ? nice : raw; // no round step above raw is below MAX_VALUE
  const ticks = [];
  // Near MAX_VALUE, `max + step * 1e-9` and `v` overflow to Infinity (and Infinity <= Infinity forever):
  // hence the slack on v's side, the finiteness test and the cap.
  for (let v = Math.ceil(min / step) * step; Number.isFinite(v) && v - step * 1e-9 <= max && ticks.length <= count + 1; v += step) {
    ticks.push(+v.toPrecision(12));
  }
  return ticks;
}

const TIME_STEPS = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((x) => x * 1000);

function timeTicks(t0, t1, count) {
  const step = TIME_STEPS.find((v) => (t1 - t0) / v <= count) || 86400000;
  const ticks = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
  return { ticks, step };
}

function timeLabel(t, step) {
  const iso = new Date(t).toISOString();
  if (step >= 86400000) return iso.slice(5, 10);
  return step < 60000 ? iso.slice(11, 19) : iso.slice(11, 16);
}

export function fmtValue(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return (+v.toPrecision(5)).toString();
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v === null || v === undefined || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) return [0, 1];
  // Halves and clamps: hi - lo, and the padded ends, overflow to ±Infinity near ±1e308.
  const pad = lo === hi ? (Math.abs(lo) || 1) * 0.05 : (hi / 2 - lo / 2) * 0.12;
  return [Math.max(lo - pad, -Number.MAX_VALUE), Math.min(hi + pad, Number.MAX_VALUE)];
}

// The index of the last time <= t (times sorted ascending), or -1.
function bisect(times, t) {
  let lo = 0;
  let hi = times.length - 1;
  if (!times.length || t < times[0]) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (times[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Draw stacked time panels into `container`.
 * spec = {start, end (ms), panels: [{title, height, domain, series: [{name, times, values, kind: "line"|"dots"|"bars", cls, stepMs}],
 *         levels: [{from, to, value, label, cls}], points: [{time, cls, label}]}],
 *         markers: [{time, cls, label}], bands: [{from, to, cls, label}]}
 */
export function timeChart(container, spec) {
  const state = { view: [spec.start, spec.end] };
  const wrap = document.createElement("div");
  wrap.className = "chart-wrap";
  const tip = document.createElement("div");
  tip.className = "chart-tip";
  tip.hidden = true;
  container.replaceChildren(wrap, tip);
  const draw = () => render(wrap, tip, spec, state, draw);
  draw();
  if (container.chartObserver) container.chartObserver.disconnect();
  container.chartObserver = new ResizeObserver(() => draw());
  container.chartObserver.observe(container);
  return { redraw: draw, zoom: (from, to) => { state.view = [from, to]; draw(); } };
}

function render(wrap, tip, spec, state, redraw) {
  const width = Math.max(wrap.clientWidth || 800, 320);
  const panels = spec.panels;
  const heights = panels.map((p) => p.height || 90);
  const total = MARGIN.top + heights.reduce((a, b) => a + b + TITLE_H + PANEL_GAP, 0) + MARGIN.bottom;
  const svg = s("svg", { class: "chart", width, height: total, viewBox: `0 0 ${width} ${total}`, role: "img" });
  const [t0, t1] = state.view;
  const plotW = width - MARGIN.left - MARGIN.right;
  const x = (t) => MARGIN.left + ((t - t0) / (t1 - t0 || 1)) * plotW;
  const { ticks: xTicks, step } = timeTicks(t0, t1, Math.max(3, Math.floor(plotW / 90)));
  const clipId = `clip${Math.random().toString(36).slice(2, 8)}`;
  s("rect", { x: MARGIN.left, y: 0, width: plotW, height: total }, s("clipPath", { id: clipId }, s("defs", {}, svg)));

  const layout = [];
  let top = MARGIN.top;
  panels.forEach((panel, index) => {
    const h = heights[index];
    const y0 = top + TITLE_H;
    const visible = panel.series.flatMap((series) =>
      series.values.filter((_, i) => series.times[i] >= t0 && series.times[i] <= t1));
    for (const level of panel.levels || []) visible.push(level.value);
    const [lo, hi] = panel.domain || extent(visible);
    const y = (v) => y0 + h - ((v / 2 - lo / 2) / (hi / 2 - lo / 2 || 1)) * h;
    layout.push({ panel, y0, h, y });
    const g = s("g", { class: "panel", "data-title": panel.title }, svg);
    s("text", { x: MARGIN.left, y: top + 10, class: "panel-title" }, g).textContent = displayText(panel.title);
    s("text", { x: width - MARGIN.right, y: top + 10, class: "panel-readout", "text-anchor": "end" }, g);
    s("rect", { x: MARGIN.left, y: y0, width: plotW, height: h, class: "plot-bg" }, g);
    for (const tick of niceTicks(lo, hi, Math.max(2, Math.floor(h / 28)))) {
      s("line", { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: y(tick), y2: y(tick), class: "grid" }, g);
      s("text", { x: MARGIN.left - 4, y: y(tick) + 3, class: "tick", "text-anchor": "end" }, g).textContent = fmtValue(tick);
    }
    for (const t of xTicks) s("line", { x1: x(t), x2: x(t), y1: y0, y2: y0 + h, class: "grid" }, g);
    const plot = s("g", { "clip-path": `url(#${clipId})` }, g);
    for (const band of spec.bands || []) {
      s("rect", { x: x(band.from), width: Math.max(1, x(band.to) - x(band.from)), y: y0, height: h, class: `band ${band.cls || ""}` }, plot);
    }
    for (const series of panel.series) drawSeries(plot, series, x, y, y0 + h, t0, t1);
    for (const level of panel.levels || []) {
      s("line", { x1: x(level.from), x2: x(level.to), y1: y(level.value), y2: y(level.value), class: `level ${level.cls || ""}` }, plot);
      if (level.label) s("text", { x: Math.max(x(level.from), MARGIN.left) + 3, y: y(level.value) - 3, class: `level-label ${level.cls || ""}` }, plot).textContent = level.label;
    }
    for (const point of panel.points || []) {
      const series = panel.series[0];
      const i = bisect(series.times, point.time);
      if (i < 0) continue;
      const value = series.values[i];
      if (value === null || value === undefined) continue;
      s("circle", { cx: x(series.times[i]), cy: y(value), r: 4, class: `point ${point.cls || ""}` }, plot)
        .append(Object.assign(document.createElementNS(SVG, "title"), { textContent: point.label || "" }));
    }
    for (const marker of spec.markers || []) {
      s("line", { x1: x(marker.time), x2: x(marker.time), y1: y0, y2: y0 + h, class: `marker ${marker.cls || ""}` }, plot);
    }
    top += h + TITLE_H + PANEL_GAP;
  });

  const axisY = total - MARGIN.bottom + 14;
  for (const t of xTicks) s("text", { x: x(t), y: axisY, class: "tick", "text-anchor": "middle" }, svg).textContent = timeLabel(t, step);
  // Labels one under the other, so markers close in time stay readable.
  (spec.markers || []).filter((m) => m.label && m.time >= t0 && m.time <= t1).forEach((marker, index) => {
    s("text", { x: x(marker.time) + 3, y: MARGIN.top + TITLE_H + 10 + index * 11, class: `marker-label ${marker.cls || ""}` }, svg).textContent = marker.label;
  });
  const cursor = s("line", { y1: MARGIN.top, y2: total - MARGIN.bottom, class: "cursor", visibility: "hidden" }, svg);
  const brush = s("rect", { y: MARGIN.top, height: total - MARGIN.bottom - MARGIN.top, class: "brush", visibility: "hidden" }, svg);
  const overlay = s("rect", { x: MARGIN.left, y: 0, width: plotW, height: total, class: "overlay" }, svg);
  const timeAt = (event) => {
    const box = svg.getBoundingClientRect();
    return t0 + ((event.clientX - box.left - MARGIN.left) / plotW) * (t1 - t0);
  };
  let dragFrom = null;
  overlay.addEventListener("mousemove", (event) => {
    const t = timeAt(event);
    cursor.setAttribute("x1", x(t));
    cursor.setAttribute("x2", x(t));
    cursor.setAttribute("visibility", "visible");
    showReadout(svg, layout, t, tip, event, step);
    if (dragFrom !== null) {
      brush.setAttribute("x", Math.min(x(dragFrom), x(t)));
      brush.setAttribute("width", Math.abs(x(t) - x(dragFrom)));
      brush.setAttribute("visibility", "visible");
    }
  });
  overlay.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    tip.hidden = true;
  });
  overlay.addEventListener("mousedown", (event) => { dragFrom = timeAt(event); event.preventDefault(); });
  overlay.addEventListener("mouseup", (event) => {
    const to = timeAt(event);
    if (dragFrom !== null && Math.abs(x(to) - x(dragFrom)) > 6) {
      state.view = [Math.min(dragFrom, to), Math.max(dragFrom, to)];
      dragFrom = null;
      redraw();
      return;
    }
    dragFrom = null;
    brush.setAttribute("visibility", "hidden");
  });
  overlay.addEventListener("dblclick", () => { state.view = [spec.start, spec.end]; redraw(); });
  wrap.replaceChildren(svg);
}

function drawSeries(g, series, x, y, base, t0, t1) {
  const { times, values } = series;
  const kind = series.kind || "line";
  const cls = `series ${kind} ${series.cls || ""}`;
  if (kind === "line") {
    let d = "";
    let pen = false;
    for (let i = 0; i < times.length; i++) {
      const v = values[i];
      if (v === null || v === undefined || !Number.isFinite(v)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    s("path", { d, class: cls }, g);
    return;
  }
  // Bars are as wide as the series says (sparse series such as alarms cannot infer it).
  const step = series.stepMs || smallestStep(times);
  const width = Math.max(1, (x(t0 + step) - x(t0)) * 0.8);
  const frag = document.createDocumentFragment();
  for (let i = 0; i < times.length; i++) {
    const v = values[i];
    if (v === null || v === undefined || times[i] < t0 - step || times[i] > t1 + step) continue;
    if (kind === "bars") {
      const zero = Math.min(base, y(0));
      frag.append(s("rect", { x: x(times[i]) - width / 2, y: Math.min(y(v), zero), width, height: Math.max(1, Math.abs(zero - y(v))), class: cls }));
    } else {
      frag.append(s("circle", { cx: x(times[i]), cy: y(v), r: 1.6, class: cls }));
    }
  }
  g.append(frag);
}

// The shortest gap between consecutive times: the bar size of a series with gaps.
function smallestStep(times) {
  let step = Infinity;
  for (let i = 1; i < times.length; i++) if (times[i] > times[i - 1]) step = Math.min(step, times[i] - times[i - 1]);
  return Number.isFinite(step) ? step : 1000;
}

function showReadout(svg, layout, t, tip, event, step) {
  // Text nodes only: panel titles hold stream and field names from the data. Each title is
  // isolated (bdi) so that right-to-left text in a name cannot move the value after it.
  const lines = layout.map(({ panel }, index) => {
    const series = panel.series[0];
    const i = series ? bisect(series.times, t) : -1;
    const value = i >= 0 ? series.values[i] : null;
    const text = `${fmtValue(value)}`;
    const readout = svg.querySelectorAll(".panel-readout")[index];
    if (readout) readout.textContent = text;
    return [h("br"), h("bdi", {}, panel.title), `: ${text}`];
  });
  clear(tip, h("b", {}, new Date(t).toISOString().slice(0, step < 60000 ? 23 : 19).replace("T", " ")), lines);
  tip.hidden = false;
  const box = svg.getBoundingClientRect();
  tip.style.left = `${Math.min(event.clientX - box.left + 14, box.width - 220)}px`;
  tip.style.top = `${event.clientY - box.top + 10}px`;
}
