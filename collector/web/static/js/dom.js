// Small DOM and formatting helpers shared by the views.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  return el;
}

export function fmtTime(ns) {
  if (!ns) return "";
  const d = new Date(ns / 1e6);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ns) {
  if (!ns || ns < 0) return "";
  let s = Math.round(ns / 1e9);
  if (s < 60) return `${(ns / 1e9).toFixed(ns < 1e10 ? 1 : 0)} s`;
  const hours = Math.floor(s / 3600); s -= hours * 3600;
  const minutes = Math.floor(s / 60); s -= minutes * 60;
  const pad = (n) => String(n).padStart(2, "0");
  return hours ? `${hours}h ${pad(minutes)}m ${pad(s)}s` : `${minutes}m ${pad(s)}s`;
}

export function fmtNumber(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;  // "NaN", "Infinity" as the API sends them
  if (typeof v === "boolean") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(4);
  return String(Number(v.toPrecision(6)));
}

export function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") {
    return fmtNumber(v);
  }
  return JSON.stringify(v);
}

export function statusBadge(status) {
  return h("span", { class: `status status-${String(status).toLowerCase()}` }, status);
}

export function runLabel(run) {
  return run.display_name || run.run_id;
}

// A table of rows (arrays of cells) under headers; cells may be nodes.
export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

export function keyValues(obj) {
  const keys = Object.keys(obj || {}).sort();
  if (!keys.length) return h("p", { class: "muted" }, "none");
  return table(["key", "value"], keys.map((k) => [k, obj[k]]), { class: "kv" });
}
