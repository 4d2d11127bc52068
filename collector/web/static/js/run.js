// A run's page: details, metrics (charts, tables, images, JSON metrics), logs
// (live while it runs) and artifacts. The tab and chart options live in the URL.

import { artifactPath, blob, enc, get, token } from "./api.js";
import { barChart, lineChart } from "./chart.js";
import { clear, fmtBytes, fmtDuration, fmtNumber, fmtTime, fmtValue, h, keyValues, runLabel,
  statusBadge, table } from "./dom.js";
import { jsonMetric } from "./jsonviz.js";
import { logView } from "./logs.js";

const TABS = [["overview", "Overview"], ["metrics", "Metrics"], ["logs", "Logs"],
  ["artifacts", "Artifacts"]];

export async function renderRun(ctx, runId) {
  const { app, params, navigate, setLeave } = ctx;
  const run = await get(`runs/${enc(runId)}`);
  const tab = params.get("tab") || "metrics";
  const cleanups = [];
  setLeave(() => cleanups.forEach((fn) => fn()));
  const setParam = (key, value) => {
    const next = new URLSearchParams(params);
    if (value === "" || value === null) next.delete(key); else next.set(key, value);
    navigate(`/run/${encodeURIComponent(runId)}`, next);
  };
  const body = h("section", { id: "run-body" });
  clear(app, header(run),
    h("nav", { class: "tabs" }, TABS.map(([key, label]) => h("a", {
      href: "#", class: key === tab ? "active" : "", dataset: { tab: key },
      onclick: (e) => { e.preventDefault(); setParam("tab", key === "metrics" ? "" : key); },
    }, label))), body);
  if (tab === "overview") overview(body, run);
  else if (tab === "logs") cleanups.push(await logView(body, run, params));
  else if (tab === "artifacts") await artifacts(body, run);
  else cleanups.push(...(await metrics(body, run, params, setParam)));
}

function header(run) {
  const end = run.end_time_unix_nano || (run.status === "Running" ? Date.now() * 1e6 : 0);
  return h("div", { class: "run-header" },
    h("h1", {}, runLabel(run), " ", statusBadge(run.status)),
    h("p", { class: "muted" },
      h("span", {}, `id ${run.run_id}`), " · ", h("span", {}, `experiment ${run.experiment}`),
      " · ", h("span", {}, `started ${fmtTime(run.start_time_unix_nano)}`),
      end ? ` · ${fmtDuration(end - run.start_time_unix_nano)}` : "",
      run.parent_run_id ? [" · parent ", h("a", { href: `#/run/${enc(run.parent_run_id)}` },
        run.parent_run_id)] : null),
    run.error ? h("div", { class: "error-box", id: "run-error" },
      h("strong", {}, run.error.type ? `${run.error.type}: ` : "Error: "), run.error.message,
      run.error.exit_code ? ` (exit code ${run.error.exit_code})` : "",
      run.error.traceback ? h("pre", {}, run.error.traceback) : null) : null);
}

function overview(body, run) {
  clear(body,
    h("h2", {}, "Tags"), keyValues(run.tags),
    h("h2", {}, "Properties"), keyValues(run.properties),
    h("h2", {}, "Children"),
    run.children.length ? table(["run", "status", "started"], run.children.map((c) => [
      h("a", { href: `#/run/${enc(c.run_id)}` }, runLabel(c)), statusBadge(c.status),
      fmtTime(c.start_time_unix_nano)])) : h("p", { class: "muted" }, "none"),
    h("h2", {}, "Counts"),
    keyValues({ "log lines": run.log_lines, "metric records": run.metric_records,
      artifacts: run.artifacts }));
}

async function metrics(body, run, params, setParam) {
  const { metrics: all } = await get(`runs/${enc(run.run_id)}/metrics`);
  const x = params.get("x") || "step";
  const smooth = Number(params.get("smooth") || 0);
  const log = params.get("log") === "1";
  const controls = h("div", { class: "chart-controls" },
    h("label", {}, "x axis ", h("select", { id: "x-axis", onchange: (e) => setParam("x", e.target.value === "step" ? "" : e.target.value) },
      h("option", { value: "step", selected: x === "step" }, "step"),
      h("option", { value: "time", selected: x === "time" }, "time"))),
    h("label", {}, "smoothing ", h("input", { id: "smoothing", type: "range", min: 0, max: 0.99,
      step: 0.01, value: smooth, onchange: (e) => setParam("smooth", e.target.value === "0" ? "" : e.target.value) }),
      ` ${smooth}`),
    h("label", {}, h("input", { id: "log-scale", type: "checkbox", checked: log,
      onchange: (e) => setParam("log", e.target.checked ? "1" : "") }), " log scale"));
  const scalars = all.filter((m) => m.kind === "scalar");
  const others = all.filter((m) => m.kind !== "scalar");
  const grid = h("div", { class: "charts" });
  clear(body, all.length ? controls : h("p", { class: "muted" }, "No metrics yet."), grid,
    others.length ? h("div", { class: "others" }, others.map((m) => otherMetric(run, m))) : null);
  const cleanups = [];
  await Promise.all(scalars.map(async (m) => {
    const plot = h("div", { class: "plot" });
    const card = h("div", { class: "card chart", dataset: { metric: m.name } },
      h("h3", {}, m.name),
      h("p", { class: "summary" }, `last ${fmtNumber(m.last)} · min ${fmtNumber(m.min)} · ` +
        `max ${fmtNumber(m.max)} · ${m.count} points`), plot);
    grid.append(card);
    const load = async (lo, hi) => {
      const q = new URLSearchParams({ x, buckets: String(Math.max(200, plot.clientWidth || 800)) });
      if (lo !== null && lo !== undefined) { q.set("from", lo); q.set("to", hi); }
      const s = await get(`runs/${enc(run.run_id)}/metrics/${enc(m.name)}`, q);
      card.dataset.downsampled = s.downsampled ? "1" : "";
      return [{ label: m.name, ...s }];
    };
    const chart = lineChart(plot, await load(null, null), { x, smooth, log, onZoom: load,
      key: `${run.run_id}/${m.name}` });
    if (chart.note) card.append(h("p", { class: "muted" }, chart.note));
    cleanups.push(chart.destroy);
  }));
  return cleanups;
}

function otherMetric(run, m) {
  const card = h("div", { class: "card other", dataset: { metric: m.name, kind: m.kind } },
    h("h3", {}, m.name, " ", h("span", { class: "muted" }, m.kind)));
  const v = m.value;
  if (m.kind === "list" || (Array.isArray(v) && m.kind !== "image" && !isJsonKind(m.kind))) {
    card.append(table(["#", "value"], [].concat(v).map((x, i) => [i, fmtValue(x)])));
  } else if (m.kind === "row" || m.kind === "table") {
    const columns = Object.keys(v);
    const height = Math.max(0, ...columns.map((c) => [].concat(v[c]).length));
    const cell = (c, i) => (Array.isArray(v[c]) ? v[c][i] : i === 0 ? v[c] : null);
    card.append(table(columns, Array.from({ length: height }, (_, i) =>
      columns.map((c) => fmtValue(cell(c, i))))));
  } else if (m.kind === "image") {
    card.append(gallery(run, [].concat(v)));
  } else if (isJsonKind(m.kind)) {
    for (const doc of [].concat(v)) card.append(jsonMetric(m.kind, doc));
  } else {
    card.append(h("pre", {}, JSON.stringify(v, null, 2)));
  }
  return card;
}

function isJsonKind(kind) {
  return ["confusion_matrix", "accuracy_table", "residuals", "predictions", "json"].includes(kind);
}

function gallery(run, paths) {
  const box = h("div", { class: "gallery" });
  paths.forEach(async (path, i) => {
    const img = h("img", { alt: path, title: path });
    box.append(h("figure", {}, img, h("figcaption", {}, `${i + 1}. ${path}`)));
    img.src = URL.createObjectURL(await blob(artifactPath(run.run_id, path)));
  });
  return box;
}

async function artifacts(body, run) {
  const { artifacts: list } = await get(`runs/${enc(run.run_id)}/artifacts`);
  clear(body, list.length ? table(["path", "size", "sha256", ""], list.map((a) => [
    a.path, fmtBytes(a.size), h("code", {}, a.sha256.slice(0, 16)),
    h("a", { href: `/api/v1/${artifactPath(run.run_id, a.path)}`, class: "download",
      download: a.path.split("/").pop(), dataset: { path: a.path },
      onclick: (e) => withToken(e, run.run_id, a.path) }, "download")]),
  { id: "artifacts-table" }) : h("p", { class: "muted" }, "No artifacts."));
}

// With a token the link alone would be refused (a link sends no header): fetch the
// bytes with it and hand them to the browser as a download.
async function withToken(event, runId, path) {
  if (!token()) return;
  event.preventDefault();
  const url = URL.createObjectURL(await blob(artifactPath(runId, path)));
  const link = h("a", { href: url, download: path.split("/").pop() });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export { barChart };
