// One function per page: fetch its JSON (docs/dashboard-api.md), return the nodes to show.

import { get, put, csvLink, ApiError } from "./api.js";
import { timeChart, barChart, sparkline } from "./charts.js";
import { table } from "./tables.js";
import * as fmt from "./format.js";

export const PAGES = [
  { id: "overview", title: "Apps", tab: true },
  { id: "traffic", title: "Traffic", tab: true },
  { id: "latency", title: "Latency", tab: true },
  { id: "endpoints", title: "Endpoints", tab: true },
  { id: "endpoint", title: "Endpoint", tab: false },
  { id: "errors", title: "Errors", tab: true },
  { id: "consumers", title: "Consumers", tab: true },
  { id: "instances", title: "Instances", tab: true },
  { id: "alerts", title: "Alerts", tab: true },
  { id: "requests", title: "Requests", tab: true },
  { id: "request", title: "Request", tab: false },
];

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) node.append(child);
  return node;
}

function stat(label, value, [changeText, direction] = ["", ""], upIsGood = true) {
  const cls = direction ? `change ${direction}-${(direction === "up") === upIsGood ? "good" : "bad"}` : "change";
  return el("div", { class: "stat", "data-stat": label }, [
    el("div", { class: "label", text: label }),
    el("div", { class: "value", text: value }),
    el("div", { class: cls, text: changeText ? `${changeText} vs previous` : "" }),
  ]);
}

function perMinute(values, step) {
  return values.map((v) => (v === null ? null : v / (step / 60)));
}

function ratio(part, whole) {
  return part.map((p, i) => (whole[i] ? p / whole[i] : null));
}

function zoomer(ctx) {
  return (from, to) => ctx.navigate({ from: String(from), to: String(to), range: "" });
}

function tableState(state, ctx) {
  return { state: { q: state.q, sort: state.sort, dir: state.dir }, onState: (s) => ctx.navigate(s, { replace: true }) };
}

function endpointLink(state, method, route) {
  const q = new URLSearchParams(window.location.search);
  for (const k of ["q", "sort", "dir", "hidden"]) q.delete(k);
  q.set("method", method);
  q.set("route", route);
  return el("a", { href: `/apps/${encodeURIComponent(state.app)}/endpoint?${q}`, "data-nav": true, text: route });
}

// -- pages ---------------------------------------------------------------------------------------

async function overview(state, ctx) {
  const data = await get("/api/apps", ctx.apiParams(state, false));
  const rows = data.apps;
  const link = (r) => {
    const q = new URLSearchParams(window.location.search);
    return el("a", { href: `/apps/${encodeURIComponent(r.app)}/traffic?${q}`, "data-nav": true, text: r.app });
  };
  return {
    title: "Apps",
    window: data.window,
    nodes: [
      el("h1", { text: "Apps" }),
      table({
        caption: "Apps",
        ...tableState(state, ctx),
        csv: csvLink("/api/apps", ctx.apiParams(state, false), "apps"),
        rows,
        columns: [
          { key: "app", label: "App", cell: link },
          { key: "envs", label: "Environments", fmt: (v) => v.join(", ") },
          { key: "requests", label: "Requests", num: true, fmt: fmt.count },
          { key: "error_rate", label: "Error rate", num: true, fmt: fmt.percent },
          { key: "p95", label: "p95", num: true, fmt: fmt.seconds },
          { label: "Requests over the window", cell: (r) => sparkline(r.spark, `${r.app}: ${r.spark.join(", ")} requests per ${fmt.duration(data.window.step)}`) },
        ],
        empty: "No app has sent data in this window. Create one with `tallyhub apps create NAME`.",
      }),
    ],
  };
}

async function traffic(state, ctx) {
  const data = await get("/api/traffic", ctx.apiParams(state));
  const t = data.totals, p = data.previous, s = data.series, step = data.window.step;
  return {
    title: `${state.app} traffic`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: traffic` }),
      el("div", { class: "headline" }, [
        stat("Requests", fmt.count(t.requests), fmt.change(t.requests, p.requests)),
        stat("Requests per minute", fmt.rate(t.requests_per_minute), fmt.change(t.requests_per_minute, p.requests_per_minute)),
        stat("Error rate", fmt.percent(t.error_rate), fmt.change(t.error_rate, p.error_rate), false),
        stat("Client errors (4xx)", fmt.count(t.client_errors), fmt.change(t.client_errors, p.client_errors), false),
        stat("Server errors (5xx)", fmt.count(t.server_errors), fmt.change(t.server_errors, p.server_errors), false),
        stat("Data in", fmt.bytes(t.bytes_in), fmt.change(t.bytes_in, p.bytes_in)),
        stat("Data out", fmt.bytes(t.bytes_out), fmt.change(t.bytes_out, p.bytes_out)),
      ]),
      el("div", { class: "charts" }, [
        timeChart({ title: "Requests per minute", time: s.time, tz: state.tz, valueFmt: fmt.rate, onZoom: zoomer(ctx),
          series: [{ label: "requests/min", values: perMinute(s.requests, step) }] }),
        timeChart({ title: "Error rate", time: s.time, tz: state.tz, valueFmt: fmt.percent, onZoom: zoomer(ctx),
          series: [{ label: "4xx", values: ratio(s.client_errors, s.requests) }, { label: "5xx", values: ratio(s.server_errors, s.requests) }] }),
        timeChart({ title: "Data in and out", time: s.time, tz: state.tz, valueFmt: fmt.bytes, onZoom: zoomer(ctx),
          series: [{ label: "in", values: s.bytes_in }, { label: "out", values: s.bytes_out }] }),
      ]),
    ],
  };
}

function apdexForm(state, current, onSave, label) {
  const input = el("input", { type: "number", min: "0.001", step: "0.001", value: current, "aria-label": label, class: "short" });
  const note = el("span", { class: "muted", role: "status" });
  const form = el("form", { class: "toolbar", "aria-label": label }, [el("label", { text: `${label} (s) ` }, [input]), el("button", { type: "submit", text: "Save" }), note]);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await onSave(input.value === "" ? null : Number(input.value));
      note.textContent = "saved";
    } catch (err) {
      note.textContent = err.message;
    }
  });
  return form;
}

async function latency(state, ctx) {
  const data = await get("/api/latency", ctx.apiParams(state));
  const t = data.totals, s = data.series;
  return {
    title: `${state.app} latency`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: latency` }),
      el("div", { class: "headline" }, [
        stat("p50", fmt.seconds(t.p50)), stat("p95", fmt.seconds(t.p95)), stat("p99", fmt.seconds(t.p99)),
        stat(`Apdex (T = ${fmt.seconds(data.apdex_t)})`, fmt.apdex(t.apdex)),
      ]),
      el("div", { class: "charts" }, [
        timeChart({ title: "Latency percentiles", time: s.time, tz: state.tz, valueFmt: fmt.seconds, onZoom: zoomer(ctx),
          series: [{ label: "p50", values: s.p50 }, { label: "p95", values: s.p95 }, { label: "p99", values: s.p99 }] }),
        timeChart({ title: "Apdex", time: s.time, tz: state.tz, valueFmt: fmt.apdex, onZoom: zoomer(ctx),
          series: [{ label: "Apdex", values: s.apdex }] }),
      ]),
      state.method && state.route ? el("p", { class: "muted", text: "The endpoint's own Apdex threshold is set on its page." })
        : apdexForm(state, data.apdex_t, (v) => put("/api/settings/app", { app: state.app, apdex_t: v }).then(() => ctx.navigate({}, { replace: true })), "Apdex threshold of the app"),
    ],
  };
}

function statusesInput(row, onSave) {
  const input = el("input", { value: (row.expected_statuses || []).join(", "), placeholder: "e.g. 404", "aria-label": `Expected 4xx of ${row.method} ${row.route}`, size: "10" });
  input.addEventListener("change", async () => {
    const codes = input.value.split(/[ ,]+/).filter(Boolean).map(Number);
    if (codes.some((c) => !Number.isInteger(c) || c < 400 || c > 499)) { input.setCustomValidity("4xx codes, e.g. 404, 409"); input.reportValidity(); return; }
    input.setCustomValidity("");
    await onSave({ expected_statuses: codes });
  });
  return input;
}

async function endpoints(state, ctx) {
  const showHidden = state.hidden;
  const params = { ...ctx.apiParams(state), ...(showHidden ? { hidden: "1" } : {}) };
  const data = await get("/api/endpoints", params);
  const save = (r, changes) => put("/api/settings/endpoint", { app: state.app, method: r.method, route: r.route, ...changes })
    .then(() => ctx.navigate({}, { replace: true }));
  const toggle = el("label", {}, [el("input", { type: "checkbox", checked: showHidden,
    onchange: (e) => ctx.navigate({ hidden: e.target.checked }, { replace: true }) }), " show hidden endpoints"]);
  return {
    title: `${state.app} endpoints`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: endpoints` }),
      el("div", { class: "toolbar" }, [toggle]),
      table({
        caption: "Endpoints",
        ...tableState(state, ctx),
        csv: csvLink("/api/endpoints", params, "endpoints"),
        rows: data.endpoints,
        rowClass: (r) => (r.hidden ? "hidden-endpoint" : undefined),
        columns: [
          { key: "method", label: "Method" },
          { key: "route", label: "Path", cell: (r) => endpointLink(state, r.method, r.route) },
          { key: "summary", label: "Summary" },
          { key: "requests", label: "Requests", num: true, fmt: fmt.count },
          { key: "requests_per_minute", label: "Req/min", num: true, fmt: fmt.rate },
          { key: "error_rate", label: "Error rate", num: true, fmt: fmt.percent },
          { key: "p50", label: "p50", num: true, fmt: fmt.seconds },
          { key: "p95", label: "p95", num: true, fmt: fmt.seconds },
          { key: "p99", label: "p99", num: true, fmt: fmt.seconds },
          { key: "apdex", label: "Apdex", num: true, fmt: fmt.apdex },
          { key: "has_server_errors", label: "5xx", cell: (r) => (r.has_server_errors ? el("span", { class: "flag", title: "has server errors", text: "● 5xx" }) : el("span", { class: "muted", text: "–" })) },
          { label: "Expected 4xx", cell: (r) => statusesInput(r, (c) => save(r, c)) },
          { label: "Shown", cell: (r) => el("button", { type: "button", text: r.hidden ? "Show" : "Hide", "aria-label": `${r.hidden ? "Show" : "Hide"} ${r.method} ${r.route}`, onclick: () => save(r, { hidden: !r.hidden }) }) },
        ],
        empty: "No endpoints: the app has not started with tallyhub's client yet, or nothing matches.",
      }),
    ],
  };
}

function serverErrorList(errors, tz) {
  if (!errors.length) return el("p", { class: "muted", text: "No server errors in this window." });
  return el("div", { class: "server-errors" }, errors.map((e) => el("details", { class: "server-error" }, [
    el("summary", {}, [
      el("strong", { text: `${e.exception_type}: ` }), document.createTextNode(e.message || ""),
      el("span", { class: "muted", text: ` — ${fmt.count(e.count)} × ${e.method} ${e.route}, first ${fmt.time(fmt.toUnix(e.first_seen), tz)}, last ${fmt.time(fmt.toUnix(e.last_seen), tz)}` }),
    ]),
    el("pre", { class: "trace", text: e.stacktrace || "(no stack trace)" }),
  ])));
}

const VALIDATION_COLUMNS = [
  { key: "location", label: "Field (loc)" },
  { key: "message", label: "Message" },
  { key: "type", label: "Type" },
  { key: "count", label: "Count", num: true, fmt: fmt.count },
];

async function endpoint(state, ctx) {
  const data = await get("/api/endpoint", ctx.apiParams(state));
  const e = data.endpoint;
  const save = (changes) => put("/api/settings/endpoint", { app: state.app, method: e.method, route: e.route, ...changes })
    .then(() => ctx.navigate({}, { replace: true }));
  const codes = Object.keys(data.statuses.codes).sort();
  return {
    title: `${e.method} ${e.route}`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: ${e.method} ${e.route}` }),
      e.summary ? el("p", { class: "muted", text: e.summary }) : "",
      el("p", {}, [requestsLink(state, { method: e.method, route: e.route }, "Logged requests of this endpoint →")]),
      el("div", { class: "headline" }, [
        stat("Requests", fmt.count(e.requests)), stat("Error rate", fmt.percent(e.error_rate)),
        stat("p50", fmt.seconds(e.p50)), stat("p95", fmt.seconds(e.p95)), stat("p99", fmt.seconds(e.p99)),
        stat(`Apdex (T = ${fmt.seconds(e.apdex_t)})`, fmt.apdex(e.apdex)),
      ]),
      el("div", { class: "charts" }, [
        barChart({ title: "Latency histogram", labels: data.histogram.map((b) => `≤ ${fmt.seconds(b.le)}`), values: data.histogram.map((b) => b.count) }),
        timeChart({ title: "Status codes", time: data.statuses.time, tz: state.tz, onZoom: zoomer(ctx),
          series: codes.map((c) => ({ label: c, values: data.statuses.codes[c] })) }),
      ]),
      apdexForm(state, e.apdex_t, (v) => save({ apdex_t: v }), "Apdex threshold of this endpoint"),
      el("div", { class: "toolbar" }, [el("span", { text: "Expected 4xx:" }), statusesInput(e, save),
        el("button", { type: "button", text: e.hidden ? "Show in endpoints" : "Hide from endpoints", onclick: () => save({ hidden: !e.hidden }) })]),
      el("h2", { text: "Top consumers" }),
      table({ caption: "Top consumers", rows: data.consumers, searchable: false, state: { sort: "requests", dir: "desc" }, onState: () => {},
        columns: [{ key: "consumer", label: "Consumer" }, { key: "name", label: "Name" },
          { key: "requests", label: "Requests", num: true, fmt: fmt.count }, { key: "errors", label: "Errors", num: true, fmt: fmt.count }] }),
      el("h2", { text: "Validation errors" }),
      table({ caption: "Validation errors of the endpoint", rows: data.validation_errors, searchable: false, state: {}, onState: () => {}, columns: VALIDATION_COLUMNS }),
      el("h2", { text: "Server errors" }),
      serverErrorList(data.server_errors, state.tz),
    ],
  };
}

async function errors(state, ctx) {
  const data = await get("/api/errors", ctx.apiParams(state));
  const params = ctx.apiParams(state);
  return {
    title: `${state.app} errors`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: errors` }),
      el("h2", { text: "Server errors" }),
      el("div", { class: "toolbar" }, [el("a", { href: csvLink("/api/errors", params, "server_errors"), download: "", text: "CSV" }),
        requestsLink(state, { status: "5xx" }, "Logged 5xx requests →")]),
      serverErrorList(data.server_errors, state.tz),
      el("h2", { text: "Validation errors by field" }),
      table({ caption: "Validation errors", rows: data.validation_errors, ...tableState(state, ctx),
        csv: csvLink("/api/errors", params, "validation_errors"),
        columns: [{ key: "method", label: "Method" }, { key: "route", label: "Path", cell: (r) => endpointLink(state, r.method, r.route) },
          ...VALIDATION_COLUMNS, { key: "consumers", label: "Consumers", num: true, fmt: fmt.count }] }),
    ],
  };
}

async function consumers(state, ctx) {
  const data = await get("/api/consumers", ctx.apiParams(state));
  const params = ctx.apiParams(state);
  const pick = (r) => el("a", { href: "#", text: r.consumer, onclick: (ev) => { ev.preventDefault(); ctx.navigate({ page: "traffic", consumer: r.consumer }); } });
  return {
    title: `${state.app} consumers`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: consumers` }),
      el("div", { class: "charts" }, [
        timeChart({ title: "New and returning consumers", time: data.series.time, tz: state.tz, bars: true, onZoom: zoomer(ctx),
          series: [{ label: "new", values: data.series.new }, { label: "returning", values: data.series.returning }] }),
      ]),
      el("h2", { text: "Consumers" }),
      table({ caption: "Consumers", rows: data.consumers, ...tableState(state, ctx), csv: csvLink("/api/consumers", params, "consumers"),
        columns: [{ key: "consumer", label: "Consumer", cell: pick }, { key: "name", label: "Name" }, { key: "group", label: "Group" },
          { key: "requests", label: "Requests", num: true, fmt: fmt.count }, { key: "errors", label: "Errors", num: true, fmt: fmt.count },
          { key: "first_seen", label: "First seen", fmt: (v) => fmt.time(fmt.toUnix(v), state.tz) },
          { key: "last_seen", label: "Last seen", fmt: (v) => fmt.time(fmt.toUnix(v), state.tz) }] }),
      el("h2", { text: "Groups" }),
      table({ caption: "Consumer groups", rows: data.groups, searchable: false, state: {}, onState: () => {},
        columns: [{ key: "group", label: "Group", fmt: (v) => v || "(none)" }, { key: "consumers", label: "Consumers", num: true, fmt: fmt.count },
          { key: "requests", label: "Requests", num: true, fmt: fmt.count }, { key: "errors", label: "Errors", num: true, fmt: fmt.count }] }),
    ],
  };
}

// An instance's last CPU or memory value in the window, with the window's highest on hover ("–": never sent).
function latest(format, value, highest) {
  const title = highest === null || highest === undefined ? undefined : `highest in this window: ${format(highest)}`;
  return el("span", { text: format(value), title });
}

async function instances(state, ctx) {
  const params = ctx.apiParams(state, false);
  const data = await get("/api/instances", params);
  const v = (key) => (r) => (r.versions && r.versions[key]) || "–";
  return {
    title: `${state.app} instances`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: instances` }),
      table({ caption: "Instances", rows: data.instances, ...tableState(state, ctx), csv: csvLink("/api/instances", params, "instances"),
        columns: [{ key: "env", label: "Env" }, { key: "service", label: "Service" }, { key: "instance", label: "Instance" },
          { key: "host", label: "Host" }, { key: "pid", label: "PID", num: true },
          { label: "App", fmt: (_, r) => v("app")(r) }, { label: "Framework", fmt: (_, r) => v("framework")(r) },
          { label: "Python", fmt: (_, r) => v("python")(r) }, { label: "tallyhub", fmt: (_, r) => v("tallyhub")(r) },
          { key: "started_at", label: "Started", fmt: (x) => fmt.time(fmt.toUnix(x), state.tz) },
          { key: "last_seen", label: "Last seen", fmt: (x) => fmt.time(fmt.toUnix(x), state.tz) },
          { key: "uptime_s", label: "Uptime", num: true, fmt: fmt.duration },
          { key: "cpu", label: "CPU", num: true, cell: (r) => latest(fmt.percent, r.cpu, r.cpu_max) },
          { key: "memory", label: "Memory", num: true, cell: (r) => latest(fmt.bytes, r.memory, r.memory_max) },
          { key: "down", label: "State", cell: (r) => (r.down
            ? el("span", { class: "badge bad", title: `no export since ${fmt.time(fmt.toUnix(r.last_seen), state.tz)} (3 minutes or more)`, text: "down" })
            : el("span", { class: "muted", text: "reporting" })) }] }),
    ],
  };
}

// -- the request log (apps that log requests: request_logging=True) ---------------------------------

const LOG_FIELDS = [
  ["path", "Path or route", "text"], ["client_ip", "Client IP", "text"],
  ["min_ms", "Slower than (ms)", "number"], ["body", "Body contains", "text"],
];

function requestsLink(state, changes, text) {
  const q = new URLSearchParams(window.location.search);
  for (const k of ["q", "sort", "dir", "hidden", "id"]) q.delete(k);
  for (const [k, v] of Object.entries(changes)) if (v) q.set(k, v); else q.delete(k);
  return el("a", { href: `/apps/${encodeURIComponent(state.app)}/requests?${q}`, "data-nav": true, text });
}

async function requests(state, ctx) {
  const params = { ...ctx.apiParams(state) };
  for (const [key] of LOG_FIELDS) if (state[key]) params[key] = state[key];
  const data = await get("/api/requests", params);
  const form = el("form", { class: "toolbar", "aria-label": "Request log filters", onsubmit: (ev) => {
    ev.preventDefault();
    ctx.navigate(Object.fromEntries(LOG_FIELDS.map(([key]) => [key, form.elements[key].value.trim()])));
  } }, [
    ...LOG_FIELDS.map(([key, label, type]) => el("label", {}, [label + " ", el("input", { name: key, type, value: state[key] || "", min: type === "number" ? "0" : undefined })])),
    el("button", { type: "submit", text: "Search" }),
  ]);
  const open = (r) => {
    const q = new URLSearchParams(window.location.search);
    q.set("id", r.request_id);
    return el("a", { href: `/apps/${encodeURIComponent(state.app)}/request?${q}`, "data-nav": true, text: r.url_path + (r.url_query ? `?${r.url_query}` : "") });
  };
  return {
    title: `${state.app} requests`,
    window: data.window,
    nodes: [
      el("h1", { text: `${state.app}: logged requests` }),
      el("p", { class: "muted", text: "Newest first; masked in the app. Apps log requests with request_logging=True." }),
      data.over_quota_today ? el("p", { class: "notice", role: "status", "data-quota": true,
        text: `${fmt.count(data.over_quota_today)} logged requests were refused today: this app reached its daily request log quota (tallyhub serve --request-log-quota).` }) : "",
      form,
      table({ caption: "Logged requests", rows: data.requests, ...tableState(state, ctx), csv: csvLink("/api/requests", params, "requests"),
        empty: "No logged requests in this window (is request logging on in the app?).",
        rowClass: (r) => (r.status >= 500 ? "bad" : undefined),
        columns: [{ key: "time", label: "Time", fmt: (v) => fmt.time(fmt.toUnix(v), state.tz) }, { key: "method", label: "Method" },
          { key: "url_path", label: "Path", cell: open }, { key: "status", label: "Status", num: true },
          { key: "duration_ms", label: "Duration", num: true, fmt: (v) => fmt.seconds(v / 1000) },
          { key: "consumer", label: "Consumer" }, { key: "client_ip", label: "Client IP" }, { key: "env", label: "Env" }] }),
    ],
  };
}

function pretty(body) {
  try { return JSON.stringify(JSON.parse(body), null, 2); } catch { return body; }
}

function headerTable(caption, headers) {
  const rows = Object.entries(headers || {}).sort().map(([name, value]) => ({ name, value }));
  return table({ caption, rows, searchable: false, state: {}, onState: () => {}, empty: "None kept.",
    columns: [{ key: "name", label: "Header" }, { key: "value", label: "Value" }] });
}

async function request(state, ctx) {
  const data = await get("/api/request", { app: state.app, id: state.id });
  const r = data.request;
  const body = (title, text, cut) => [el("h2", { text: title + (cut ? " (cut at 50 KB)" : "") }),
    text ? el("pre", { class: "body", "data-body": title, text: pretty(text) }) : el("p", { class: "muted", text: cut ? "Not kept (a cut JSON body cannot be masked)." : "None kept (empty, binary or streamed)." })];
  return {
    title: `${r.method} ${r.url_path}`,
    nodes: [
      el("h1", { text: `${state.app}: ${r.method} ${r.url_path} → ${r.status}` }),
      el("p", {}, [requestsLink(state, { id: "" }, "← logged requests")]),
      el("dl", { class: "facts" }, [
        ["Time", fmt.time(fmt.toUnix(r.time), state.tz)], ["Duration", fmt.seconds(r.duration_ms / 1000)],
        ["Route", r.route || "–"], ["Query", r.url_query || "–"], ["Consumer", r.consumer || "–"], ["Client IP", r.client_ip || "–"],
        ["Scheme and host", `${r.scheme}://${r.host}`], ["Sizes", `${fmt.count(r.request_size)} B in, ${fmt.count(r.response_size)} B out`],
        ["Env / instance", `${r.env || "–"} / ${r.instance}`], ["Trace", r.trace_id || "–"], ["Request id", r.request_id],
      ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      el("h2", { text: "Request headers" }), headerTable("Request headers", r.request_headers),
      ...body("Request body", r.request_body, r.request_body_truncated),
      el("h2", { text: "Response headers" }), headerTable("Response headers", r.response_headers),
      ...body("Response body", r.response_body, r.response_body_truncated),
      ...(r.log_lines && r.log_lines.length ? [el("h2", { text: "Log lines" }), el("pre", { class: "body", "data-body": "Log lines", text: r.log_lines.join("\n") })] : []),
      ...(r.exception_type ? [el("h2", { text: `Exception: ${r.exception_type}` }), el("p", { text: r.exception_message }),
        el("pre", { class: "stacktrace", text: r.stacktrace })] : []),
    ],
  };
}

// -- alerts: rules, their states and history; uptime from the health checks ---------------------------

const BADGES = { firing: "bad", pending: "warn", ok: "good", resolved: "good" }; // else grey (not evaluated)

const SOURCES = { cli: "from the CLI", file: "from the rules file", dashboard: "from the dashboard" };

function badge(text) {
  return el("span", { class: `badge ${BADGES[text] || "none"}`, "data-state": text, text });
}

// A rule's value in the unit of its metric (docs/alerts.md).
function metricValue(metric, v) {
  if (v === null || v === undefined) return "no data";
  if (metric === "error_rate" || metric === "cpu") return fmt.percent(v);
  if (metric === "apdex") return fmt.apdex(v);
  if (["p50", "p95", "p99"].includes(metric)) return fmt.seconds(v);
  if (["memory", "bytes_in", "bytes_out"].includes(metric)) return fmt.bytes(v);
  if (metric === "requests_per_minute") return `${fmt.rate(v)}/min`;
  if (metric === "heartbeat") return `${fmt.duration(v * 60)} since the last export`;
  if (metric === "health_check") return v >= 1 ? "up" : "down";
  return fmt.count(v);
}

function lines(...parts) {
  const texts = parts.filter(Boolean);
  return el("div", {}, texts.map((t, i) => el("div", { class: i ? "muted" : undefined, text: t })));
}

function delays(r) {
  const parts = [r.schedule];
  if (r.pending_s) parts.push(`pending ${fmt.duration(r.pending_s)}`);
  if (r.keep_firing_s) parts.push(`keep firing ${fmt.duration(r.keep_firing_s)}`);
  return parts.filter(Boolean).join(" · ");
}

function delivery(d) {
  const outcome = d.ok ? "delivered" : d.final ? `gave up after ${d.attempt} attempts: ${d.error}` : `failed, retrying: ${d.error}`;
  return el("div", { class: d.ok ? undefined : "bad-text", text: `${d.channel}: ${outcome}` });
}

function since(t, now, tz) {
  if (t === null || t === undefined) return "–";
  return `${fmt.time(t, tz)} (${fmt.duration(Math.max(0, now - t))} ago)`;
}

function rulesTable(state, ctx, data) {
  const pick = (r) => {
    const q = new URLSearchParams(window.location.search);
    q.set("rule", r.name);
    return el("a", { href: `/apps/${encodeURIComponent(state.app)}/alerts?${q}`, "data-nav": true, text: r.name, title: "Show this rule's history" });
  };
  return table({
    caption: "Alert rules", rows: data.rules, ...tableState(state, ctx),
    rowClass: (r) => (r.name === state.rule ? "highlight" : undefined),
    empty: "No alert rules match.",
    columns: [
      { key: "state", label: "State", cell: (r) => badge(r.state) },
      { key: "name", label: "Rule", cell: (r) => el("div", { "data-rule": r.name }, [pick(r),
        ...[r.description, SOURCES[r.source] || r.source].filter(Boolean).map((t) => el("div", { class: "muted", text: t }))]) },
      { key: "condition", label: "Condition", cell: (r) => (r.error ? el("span", { class: "bad-text", text: r.error }) : lines(r.condition, delays(r))) },
      { key: "scope", label: "Scope", cell: (r) => lines(r.env ? `env ${r.env}` : "all environments", r.scope) },
      { key: "since", label: "Since", cell: (r) => el("span", { text: since(r.since, data.now, state.tz) }) },
      { key: "value", label: "Last value", cell: (r) => el("span", { text: r.state === "not evaluated" ? "–" : metricValue(r.metric, r.value),
        title: r.evaluated_at ? `${r.value ?? "no data"}, evaluated ${fmt.time(r.evaluated_at, state.tz, true)}` : undefined }) },
      { label: "Channels", cell: (r) => (r.channels && r.channels.length ? lines(...r.channels) : el("span", { class: "muted", text: "none" })) },
      { label: "Last notification", cell: (r) => (r.deliveries.length ? el("div", {}, r.deliveries.map(delivery)) : el("span", { class: "muted", text: "–" })) },
    ],
  });
}

function historyTable(state, data, metrics) {
  return table({
    caption: "Alert history", rows: data.history, searchable: false, state: {}, onState: () => {},
    empty: state.rule ? `No transitions of ${state.rule} yet.` : "No transitions yet.",
    columns: [
      { key: "time", label: "Time", fmt: (v) => fmt.time(v, state.tz, true) },
      { key: "rule", label: "Rule" },
      { key: "after", label: "Change", cell: (r) => el("span", {}, [badge(r.before), " → ", badge(r.after)]) },
      { key: "value", label: "Value", fmt: (v, r) => metricValue(r.metric || metrics[r.rule], v) },
      { key: "condition", label: "Condition" },
    ],
  });
}

function uptimeSection(state, up, rules) {
  const nodes = [el("h2", { text: "Uptime" })];
  const windows = [["24h", "24 h"], ["7d", "7 d"], ["30d", "30 d"]];
  if (!up.uptime["30d"].checks && !up.checks.length) {
    const checked = rules.some((r) => r.metric === "health_check");
    nodes.push(el("p", { class: "muted empty", text: checked
      ? "No health check results yet: the hub checks each rule's URL every minute."
      : `No health checks: add a rule with --metric health_check --url …, e.g. \`tallyhub alerts add ${state.app}-up --app ${state.app} --metric health_check --url https://…/health\`.` }));
    return nodes;
  }
  nodes.push(el("div", { class: "headline" }, windows.map(([key, label]) => {
    const w = up.uptime[key];
    return el("div", { class: "stat", "data-stat": `Uptime ${label}` }, [
      el("div", { class: "label", text: `Uptime, last ${label}` }),
      el("div", { class: "value", text: fmt.uptime(w.uptime) }),
      el("div", { class: "change", text: w.checks ? `${fmt.count(w.failed)} of ${fmt.count(w.checks)} checks failed` : "no checks" }),
    ]);
  })));
  nodes.push(el("h3", { text: "Latest check of each URL" }));
  nodes.push(table({ caption: "Health checks", rows: up.checks, searchable: false, state: {}, onState: () => {},
    columns: [
      { key: "url", label: "URL" }, { key: "env", label: "Env" },
      { key: "ok", label: "Result", cell: (r) => el("span", { class: `badge ${r.ok ? "good" : "bad"}`, text: r.ok ? "up" : "down" }) },
      { key: "time", label: "Checked", fmt: (v) => fmt.time(v, state.tz, true) },
      { key: "status", label: "Status", num: true, fmt: (v) => (v ? String(v) : "no answer") },
      { key: "duration_ms", label: "Took", num: true, fmt: (v) => fmt.seconds(v / 1000) },
      { key: "error", label: "Error" },
    ] }));
  nodes.push(el("h3", { text: "Incidents, last 30 days" }));
  nodes.push(table({ caption: "Incidents", rows: up.uptime["30d"].incidents, searchable: false, state: {}, onState: () => {},
    empty: "No incidents in the last 30 days.",
    rowClass: (r) => (r.end === null ? "ongoing" : undefined),
    columns: [
      { key: "start", label: "Start", fmt: (v) => fmt.time(v, state.tz) },
      { key: "end", label: "End", cell: (r) => (r.end === null ? el("span", { class: "badge bad", text: "ongoing" }) : el("span", { text: fmt.time(r.end, state.tz) })) },
      { label: "Duration", cell: (r) => el("span", { text: fmt.duration((r.end === null ? up.now : r.end) - r.start) }) },
      { key: "url", label: "URL" }, { key: "env", label: "Env" },
      { key: "checks", label: "Failed checks", num: true, fmt: fmt.count },
      { key: "error", label: "Error" },
    ] }));
  return nodes;
}

async function alerts(state, ctx) {
  const params = { app: state.app, ...(state.rule ? { rule: state.rule } : {}) };
  const [data, up] = await Promise.all([
    get("/api/alerts", params),
    get("/api/uptime", { app: state.app, ...(state.env ? { env: state.env } : {}) }),
  ]);
  const metrics = Object.fromEntries(data.rules.map((r) => [r.name, r.metric]));
  const firing = data.rules.filter((r) => r.state === "firing").length;
  const nodes = [el("h1", { text: `${state.app}: alerts` })];
  if (!data.rules.length) {
    nodes.push(el("p", { class: "muted empty", text: "No alert rules: add one with `tallyhub alerts add …` or the rules file (docs/alerts.md)." }));
  } else {
    nodes.push(el("p", { class: firing ? "bad-text" : "muted", role: "status",
      text: `${data.rules.length} rules, ${firing ? `${firing} firing` : "none firing"}; evaluated by the hub every minute.` }));
    nodes.push(rulesTable(state, ctx, data));
  }
  const title = state.rule ? `History of ${state.rule}` : "History";
  nodes.push(el("h2", { text: title }));
  if (state.rule) nodes.push(el("p", {}, [el("a", { href: "#", text: "Show every rule's history", onclick: (ev) => { ev.preventDefault(); ctx.navigate({ rule: "" }); } })]));
  nodes.push(historyTable(state, data, metrics));
  nodes.push(...uptimeSection(state, up, data.rules));
  return {
    title: `${state.app} alerts`,
    note: `Rules and states as of ${fmt.time(data.now, state.tz)} (${state.tz}); history: the latest transitions (at most 50); uptime over the last 24 h, 7 d and 30 d${state.env ? ` in ${state.env}` : ""}.`,
    nodes,
    after: () => {
      const row = document.querySelector("tr.highlight");
      if (row) row.scrollIntoView({ block: "center" });
    },
  };
}

const RENDERERS = { overview, traffic, latency, endpoints, endpoint, errors, consumers, instances, requests, request, alerts };

export async function renderPage(state, ctx) {
  const page = RENDERERS[state.page];
  if (!page) throw new ApiError(404, `no page ${state.page}`);
  return page(state, ctx);
}
