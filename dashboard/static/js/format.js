// How numbers and times are shown. Pure functions of their arguments (and the chosen time zone).

export function count(n) {
  if (n === null || n === undefined) return "–";
  return Math.round(n).toLocaleString("en-US");
}

export function rate(n) {
  // requests per minute: enough digits to show a small rate that is not zero
  if (n === null || n === undefined) return "–";
  if (n === 0) return "0";
  if (n >= 100) return Math.round(n).toLocaleString("en-US");
  if (n >= 1) return n.toFixed(1);
  return n.toPrecision(2);
}

export function percent(fraction) {
  if (fraction === null || fraction === undefined || Number.isNaN(fraction)) return "–";
  const p = fraction * 100;
  if (p === 0) return "0 %";
  if (p < 0.1) return "<0.1 %";
  return `${p < 10 ? p.toFixed(1) : p.toFixed(0)} %`;
}

export function uptime(fraction) {
  // a share of healthy checks: rounded down to 0.01 %, so that 99.996 % never shows as 100 %
  if (fraction === null || fraction === undefined || Number.isNaN(fraction)) return "–";
  if (fraction >= 1) return "100 %";
  return `${(Math.floor(fraction * 10000) / 100).toFixed(2)} %`;
}

export function seconds(s) {
  // a duration in seconds, in the unit that shows it
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  if (s === 0) return "0 ms";
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${trimZeros((s * 1e3).toPrecision(3))} ms`;
  return `${trimZeros(s.toPrecision(3))} s`;
}

function trimZeros(text) {
  // the zeros after a decimal point only: "12.50" → "12.5", "750" stays "750"
  return text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${i === 0 ? Math.round(v) : v.toPrecision(3)} ${units[i]}`;
}

export function apdex(a) {
  return a === null || a === undefined || Number.isNaN(a) ? "–" : a.toFixed(2);
}

export function change(now, before) {
  // the change against the previous period, as text and a direction ("up", "down", "")
  if (before === null || before === undefined || now === null || now === undefined) return ["", ""];
  if (before === 0) return now === 0 ? ["no change", ""] : ["new", "up"];
  const p = ((now - before) / before) * 100;
  if (Math.abs(p) < 0.05) return ["no change", ""];
  return [`${p > 0 ? "▲" : "▼"} ${Math.abs(p) < 10 ? Math.abs(p).toFixed(1) : Math.abs(p).toFixed(0)} %`, p > 0 ? "up" : "down"];
}

export function time(unixSeconds, tz, withSeconds = false) {
  if (unixSeconds === null || unixSeconds === undefined) return "–";
  const d = new Date(unixSeconds * 1000);
  return new Intl.DateTimeFormat("en-CA", {
    timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: withSeconds ? "2-digit" : undefined, hourCycle: "h23",
  }).format(d).replace(",", "");
}

export function toUnix(value) {
  // an ISO string from the API ("2026-12-05 10:00:00" in UTC, or with an offset) or Unix seconds
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value;
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value.replace(" ", "T")}Z`;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms / 1000;
}

export function duration(s) {
  if (s === null || s === undefined) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min`;
  return `${Math.round(s)} s`;
}
