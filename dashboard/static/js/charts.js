// Charts drawn by uPlot (vendored, see static/vendor/uplot/VERSION.md). Each chart also renders
// its data as a table that only screen readers (and tests) see.

import * as fmt from "./format.js";

const uPlot = window.uPlot;
const COLORS = ["--s1", "--s2", "--s3", "--s4", "--s5"];
const charts = new Set();

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function dataTable(caption, headers, rows) {
  const table = el("table", { class: "sr-only", "data-chart": caption });
  table.append(el("caption", { text: caption }));
  table.append(el("thead", {}, [el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))]));
  table.append(el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", { text: c }))))));
  return table;
}

function mount(box, opts, data) {
  const width = () => Math.max(box.clientWidth - 16, 240);
  const plot = new uPlot({ ...opts, width: width() }, data, box.querySelector(".plot"));
  const observer = new ResizeObserver(() => plot.setSize({ width: width(), height: opts.height }));
  observer.observe(box);
  charts.add(plot);
  plot.__observer = observer;
  return plot;
}

export function destroyAll() {
  for (const plot of charts) { plot.__observer.disconnect(); plot.destroy(); }
  charts.clear();
}

function axis(valueFmt) {
  const grid = { stroke: cssVar("--line"), width: 1 };
  return { stroke: cssVar("--muted"), grid, ticks: grid, values: valueFmt ? (u, vals) => vals.map(valueFmt) : undefined };
}

// A time series chart: `time` in Unix seconds, `series` [{label, values}], values formatted by
// `valueFmt`; a drag across it calls onZoom(fromS, toS).
export function timeChart({ title, time, series, tz, valueFmt = fmt.count, onZoom, bars = false, height = 220 }) {
  const box = el("figure", { class: "chart", "aria-label": title }, [el("h3", { text: title }), el("div", { class: "plot" })]);
  const rows = time.map((t, i) => [fmt.time(t, tz), ...series.map((s) => (s.values[i] === null ? "–" : valueFmt(s.values[i])))]);
  box.append(dataTable(title, ["time", ...series.map((s) => s.label)], rows));
  const opts = {
    height,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), tz),
    cursor: { drag: { x: true, y: false, setScale: false } },
    legend: { live: true },
    scales: { x: { time: true } },
    axes: [axis(), { ...axis(valueFmt), size: 70 }],
    series: [
      { value: (u, v) => (v === null ? "–" : fmt.time(v, tz)) },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: cssVar(COLORS[i % COLORS.length]),
        fill: bars ? cssVar(COLORS[i % COLORS.length]) + "55" : undefined,
        width: 1.5,
        spanGaps: false,
        points: { show: time.length < 80 },
        paths: bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
        value: (u, v) => (v === null || v === undefined ? "–" : valueFmt(v)),
      })),
    ],
    hooks: {
      setSelect: [(u) => {
        if (!onZoom || u.select.width < 4) return;
        const from = u.posToVal(u.select.left, "x");
        const to = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        onZoom(Math.floor(from), Math.ceil(to));
      }],
    },
  };
  requestAnimationFrame(() => mount(box, opts, [time, ...series.map((s) => s.values)]));
  return box;
}

// Bars over labelled categories (the latency histogram).
export function barChart({ title, labels, values, valueFmt = fmt.count, height = 220 }) {
  const box = el("figure", { class: "chart", "aria-label": title }, [el("h3", { text: title }), el("div", { class: "plot" })]);
  box.append(dataTable(title, ["bucket", "count"], labels.map((l, i) => [l, valueFmt(values[i])])));
  const x = labels.map((_, i) => i);
  const opts = {
    height,
    cursor: { drag: { x: false, y: false } },
    legend: { show: false },
    scales: { x: { time: false, range: [-0.5, Math.max(labels.length - 0.5, 0.5)] } },
    axes: [{ ...axis(), values: (u, vals) => vals.map((v) => (Number.isInteger(v) && labels[v] !== undefined ? labels[v] : "")) },
      { ...axis(valueFmt), size: 60 }],
    series: [{}, { label: "requests", stroke: cssVar("--s1"), fill: cssVar("--s1") + "88", paths: uPlot.paths.bars({ size: [0.9, 60] }) }],
  };
  requestAnimationFrame(() => mount(box, opts, [x, values]));
  return box;
}

// A small line of values for a table row: plain SVG, with the numbers in its label.
export function sparkline(values, label) {
  const w = 120, h = 28;
  const max = Math.max(...values, 1);
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points);
  svg.append(line);
  return svg;
}
