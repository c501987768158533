// The dashboard page: its state lives in the URL (path = app and page, query = window, filters,
// time zone, table sort), so any view can be shared; every change goes through navigate().

import { get, ApiError } from "./api.js";
import { destroyAll } from "./charts.js";
import * as fmt from "./format.js";
import { PAGES, renderPage } from "./pages.js";

const RANGES = ["15m", "1h", "6h", "24h", "7d", "30d", "12mo"];
const FILTERS = ["consumer", "method", "route", "status"];
const LOG_FILTERS = ["path", "client_ip", "min_ms", "body", "id"]; // the request log's own (its pages only)
const ALERT_KEYS = ["rule"]; // the alerts page's own: the rule a notification links to
const UNFILTERED = ["instances", "alerts"]; // pages that the filters do not apply to
const REFRESH_MS = 10_000;
const $ = (id) => document.getElementById(id);

export function readState() {
  const url = new URL(window.location.href);
  const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const q = url.searchParams;
  const state = {
    app: parts[0] === "apps" ? parts[1] || "" : "",
    page: parts[0] === "apps" ? parts[2] || "traffic" : "overview",
    env: q.get("env") || "",
    range: q.get("range") || (q.get("from") ? "" : "24h"),
    from: q.get("from") || "",
    to: q.get("to") || "",
    tz: q.get("tz") || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
    refresh: q.get("refresh") !== "0",
    hidden: q.get("hidden") === "1",
    q: q.get("q") || "",
    sort: q.get("sort") || "",
    dir: q.get("dir") || "",
  };
  for (const f of [...FILTERS, ...LOG_FILTERS, ...ALERT_KEYS]) state[f] = q.get(f) || "";
  return state;
}

function urlOf(state) {
  const path = state.page === "overview" || !state.app
    ? "/"
    : `/apps/${encodeURIComponent(state.app)}/${state.page}`;
  const q = new URLSearchParams();
  const logs = state.page === "requests" || state.page === "request" ? LOG_FILTERS : [];
  const own = state.page === "alerts" ? ALERT_KEYS : [];
  for (const key of ["env", ...FILTERS, ...logs, ...own, "q", "sort", "dir"]) if (state[key]) q.set(key, state[key]);
  if (state.from) { q.set("from", state.from); if (state.to) q.set("to", state.to); } else if (state.range && state.range !== "24h") q.set("range", state.range);
  q.set("tz", state.tz);
  if (!state.refresh) q.set("refresh", "0");
  if (state.hidden && state.page === "endpoints") q.set("hidden", "1");
  const query = q.toString();
  return query ? `${path}?${query}` : path;
}

// The API's query for the state: window, environment and filters.
export function apiParams(state, withFilters = true) {
  const p = {};
  if (state.app) p.app = state.app;
  if (state.env) p.env = state.env;
  if (state.from) { p.from = state.from; if (state.to) p.to = state.to; } else p.range = state.range || "24h";
  if (withFilters) for (const f of FILTERS) if (state[f]) p[f] = state[f];
  return p;
}

export function navigate(changes, { replace = false } = {}) {
  const state = { ...readState(), ...changes };
  const url = urlOf(state);
  if (replace) window.history.replaceState(null, "", url); else window.history.pushState(null, "", url);
  render();
}

// A wall-clock time typed in time zone `tz` (datetime-local) → Unix seconds.
function zonedToUnix(local, tz) {
  const guess = Date.parse(local.length === 16 ? `${local}:00Z` : `${local}Z`);
  if (Number.isNaN(guess)) return null;
  const offset = (ms) => {
    const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
    const asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    return asUtc - Math.floor(ms / 1000) * 1000;
  };
  const first = guess - offset(guess);
  return Math.round((guess - offset(first)) / 1000);
}

function unixToLocalInput(s, tz) {
  return fmt.time(Number(s), tz).replace(" ", "T");
}

let apps = null;
let timer = null;
let rendering = 0;

async function header(state) {
  if (apps === null) {
    try {
      apps = (await get("/api/apps", { range: "30d" })).apps;
    } catch (e) {
      apps = [];
    }
  }
  const appSel = $("app");
  appSel.replaceChildren(new Option("all apps", ""), ...apps.map((a) => new Option(a.app, a.app)));
  if (state.app && !apps.some((a) => a.app === state.app)) appSel.append(new Option(state.app, state.app));
  appSel.value = state.app;
  const envs = new Set();
  for (const a of apps) if (!state.app || a.app === state.app) for (const e of a.envs) envs.add(e);
  if (state.env) envs.add(state.env);
  $("env").replaceChildren(new Option("all", ""), ...[...envs].sort().map((e) => new Option(e, e)));
  $("env").value = state.env;

  $("ranges").replaceChildren(...RANGES.map((r) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = r;
    b.setAttribute("aria-pressed", String(!state.from && state.range === r));
    b.addEventListener("click", () => navigate({ range: r, from: "", to: "" }));
    return b;
  }));
  $("from").value = state.from ? unixToLocalInput(state.from, state.tz) : "";
  $("to").value = state.to ? unixToLocalInput(state.to, state.tz) : "";

  const tzSel = $("tz");
  if (!tzSel.options.length) {
    const zones = new Set(["UTC", Intl.DateTimeFormat().resolvedOptions().timeZone, ...(Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [])]);
    tzSel.replaceChildren(...[...zones].map((z) => new Option(z, z)));
  }
  if (![...tzSel.options].some((o) => o.value === state.tz)) tzSel.append(new Option(state.tz, state.tz));
  tzSel.value = state.tz;
  $("refresh").setAttribute("aria-pressed", String(state.refresh));

  $("tabs").replaceChildren(...PAGES.filter((p) => p.tab && (p.id === "overview" || state.app)).map((p) => {
    const a = document.createElement("a");
    a.textContent = p.title;
    a.href = urlOf({ ...state, page: p.id, q: "", sort: "", dir: "", rule: "" });
    a.dataset.nav = "";
    if (state.page === p.id || (p.id === "endpoints" && state.page === "endpoint")) a.setAttribute("aria-current", "page");
    return a;
  }));
  for (const f of FILTERS) $(`f-${f}`).value = state[f];
  $("filters").hidden = !state.app || UNFILTERED.includes(state.page);
}

export async function render({ quiet = false } = {}) {
  const state = readState();
  const ticket = ++rendering;
  await header(state);
  const main = $("main");
  if (!quiet) { destroyAll(); main.replaceChildren(Object.assign(document.createElement("p"), { className: "muted", textContent: "Loading…" })); }
  try {
    const content = await renderPage(state, { apiParams, navigate });
    if (ticket !== rendering) return; // a newer render started meanwhile
    destroyAll();
    main.replaceChildren(...content.nodes);
    const w = content.window;
    $("window-note").textContent = w
      ? `${fmt.time(w.from, state.tz)} – ${fmt.time(w.to, state.tz)} (${state.tz}), one point per ${fmt.duration(w.step)}, from the ${w.level} table`
      : content.note || "";
    document.title = `${content.title} · tallyhub`;
    if (!quiet && content.after) content.after(); // e.g. scroll to what the address points at
  } catch (e) {
    if (ticket !== rendering) return;
    const box = document.createElement("div");
    box.className = "error-box";
    box.setAttribute("role", "alert");
    box.textContent = e instanceof ApiError && e.status === 404 ? `Not found: ${e.message}` : `Could not load this page: ${e.message}`;
    main.replaceChildren(box);
  }
  schedule(state);
}

function schedule(state) {
  clearTimeout(timer);
  if (state.refresh && !state.from) timer = setTimeout(() => render({ quiet: true }), REFRESH_MS);
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("theme").textContent = theme === "dark" ? "Light" : "Dark";
  $("theme").setAttribute("aria-label", theme === "dark" ? "Switch to light theme" : "Switch to dark theme");
}

function wire() {
  const saved = localStorage.getItem("tallyhub-theme");
  applyTheme(saved || (window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  $("theme").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem("tallyhub-theme", next);
    applyTheme(next);
    render({ quiet: true });
  });
  $("app").addEventListener("change", (e) => navigate({ app: e.target.value, page: e.target.value ? "traffic" : "overview", method: "", route: "", q: "", sort: "", dir: "" }));
  $("env").addEventListener("change", (e) => navigate({ env: e.target.value }));
  $("tz").addEventListener("change", (e) => navigate({ tz: e.target.value }, { replace: true }));
  $("refresh").addEventListener("click", () => navigate({ refresh: !readState().refresh }, { replace: true }));
  $("custom").addEventListener("submit", (e) => {
    e.preventDefault();
    const tz = readState().tz;
    const from = zonedToUnix($("from").value, tz);
    const to = $("to").value ? zonedToUnix($("to").value, tz) : null;
    if (from === null) { $("from").focus(); return; }
    navigate({ from: String(from), to: to === null ? "" : String(to), range: "" });
  });
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const changes = {};
    for (const f of FILTERS) changes[f] = $(`f-${f}`).value.trim();
    navigate(changes);
  });
  $("filters").addEventListener("reset", (e) => {
    e.preventDefault();
    navigate(Object.fromEntries(FILTERS.map((f) => [f, ""])));
  });
  $("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", credentials: "same-origin" });
    window.location.assign("/login");
  });
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-nav]");
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    window.history.pushState(null, "", a.getAttribute("href"));
    render();
  });
  window.addEventListener("popstate", () => render());
}

wire();
render();
