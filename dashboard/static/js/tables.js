// Tables: sortable by any column (buttons in the headers, so by keyboard too), searchable, with a
// CSV download of the same rows from the API.

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b));
}

// columns: [{key, label, num?, fmt?(value,row), cell?(row) → Node}]
// state: {sort, dir, q} (kept in the URL by the page); onState(newState) re-renders.
export function table({ caption, columns, rows, state = {}, onState, csv, searchable = true, rowClass, empty = "Nothing in this window." }) {
  const wrap = el("section", { class: "table-wrap", "aria-label": caption });
  const toolbar = el("div", { class: "toolbar" });
  let search = null;
  if (searchable) {
    search = el("input", { type: "search", placeholder: "Search", "aria-label": `Search ${caption}`, value: state.q || "" });
    toolbar.append(search);
  }
  if (csv) toolbar.append(el("a", { href: csv, download: "", text: "CSV" }));
  const count = el("span", { class: "muted" });
  toolbar.append(count);
  wrap.append(toolbar);

  const tableEl = el("table");
  tableEl.append(el("caption", { class: "sr-only", text: caption }));
  const headRow = el("tr");
  for (const c of columns) {
    const th = el("th", { scope: "col", class: c.num ? "num" : undefined });
    if (c.key) {
      if (state.sort === c.key) th.setAttribute("aria-sort", state.dir === "asc" ? "ascending" : "descending");
      const button = el("button", { type: "button", text: c.label });
      button.addEventListener("click", () => {
        const dir = state.sort === c.key && state.dir !== "asc" ? "asc" : "desc";
        onState({ ...state, sort: c.key, dir });
      });
      th.append(button);
    } else {
      th.textContent = c.label;
    }
    headRow.append(th);
  }
  tableEl.append(el("thead", {}, [headRow]));
  const body = el("tbody");
  tableEl.append(body);
  wrap.append(tableEl);

  const fill = (q) => {
    const needle = (q || "").trim().toLowerCase();
    let shown = rows.filter((r) => !needle || columns.some((c) => c.key && String(r[c.key] ?? "").toLowerCase().includes(needle)));
    if (state.sort) {
      const sign = state.dir === "asc" ? 1 : -1;
      shown = [...shown].sort((a, b) => {
        const order = compare(a[state.sort], b[state.sort]);
        // nulls last whichever way
        if (a[state.sort] === null || a[state.sort] === undefined || b[state.sort] === null || b[state.sort] === undefined) return order;
        return sign * order;
      });
    }
    body.replaceChildren(...shown.map((r) => el("tr", { class: rowClass ? rowClass(r) : undefined },
      columns.map((c) => {
        const td = el("td", { class: c.num ? "num" : undefined });
        if (c.cell) td.append(c.cell(r)); else td.textContent = c.fmt ? c.fmt(r[c.key], r) : (r[c.key] ?? "");
        return td;
      }))));
    if (!shown.length) body.append(el("tr", {}, [el("td", { colspan: columns.length, class: "muted", text: empty })]));
    count.textContent = `${shown.length} of ${rows.length}`;
  };
  fill(state.q);
  if (search) {
    search.addEventListener("input", () => fill(search.value));
    search.addEventListener("change", () => onState && onState({ ...state, q: search.value }));
  }
  return wrap;
}
