// Compare runs: tags, properties and final metrics side by side (differences
// marked), and every scalar metric overlaid in one chart per metric.

import { enc, get } from "./api.js";
import { lineChart } from "./chart.js";
import { clear, fmtDuration, fmtNumber, h, runLabel, statusBadge } from "./dom.js";

export async function renderCompare({ app, params, setLeave }) {
  const ids = (params.get("runs") || "").split(",").filter(Boolean);
  const { runs } = await get("compare", new URLSearchParams({ runs: ids.join(",") }));
  const x = params.get("x") || "step";
  const rows = [];
  const add = (label, values, format = (v) => v ?? "") => {
    const shown = values.map(format);
    const differs = new Set(shown.map(String)).size > 1;
    rows.push(h("tr", { class: differs ? "differs" : "" }, h("th", {}, label),
      shown.map((v) => h("td", {}, v))));
  };
  add("experiment", runs.map((r) => r.experiment));
  add("status", runs.map((r) => r.status));
  add("duration", runs.map((r) => fmtDuration((r.end_time_unix_nano || Date.now() * 1e6) - r.start_time_unix_nano)));
  for (const key of union(runs.map((r) => r.tags))) add(`tag ${key}`, runs.map((r) => r.tags[key]));
  for (const key of union(runs.map((r) => r.properties))) {
    add(`property ${key}`, runs.map((r) => r.properties[key]));
  }
  const names = union(runs.map((r) => r.metrics));
  for (const name of names) {
    for (const agg of ["last", "min", "max"]) {
      add(`${name} (${agg})`, runs.map((r) => (r.metrics[name] ? r.metrics[name][agg] : null)),
        fmtNumber);
    }
  }
  const grid = h("div", { class: "charts" });
  clear(app, h("h1", {}, `Compare ${runs.length} runs`),
    h("table", { class: "compare", id: "compare-table" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), runs.map((r) => h("th", {},
        h("a", { href: `#/run/${enc(r.run_id)}` }, runLabel(r)), " ", statusBadge(r.status))))),
      h("tbody", {}, rows)),
    h("h2", {}, "Metrics"), grid);
  const cleanups = [];
  setLeave(() => cleanups.forEach((fn) => fn()));
  await Promise.all(names.map(async (name) => {
    const plot = h("div", { class: "plot" });
    grid.append(h("div", { class: "card chart", dataset: { metric: name } }, h("h3", {}, name), plot));
    const load = (lo, hi) => Promise.all(runs.filter((r) => r.metrics[name]).map(async (r) => {
      const q = new URLSearchParams({ x, buckets: String(Math.max(200, plot.clientWidth || 800)) });
      if (lo !== null && lo !== undefined) { q.set("from", lo); q.set("to", hi); }
      const s = await get(`runs/${enc(r.run_id)}/metrics/${enc(name)}`, q);
      return { label: runLabel(r), ...s };
    }));
    const chart = lineChart(plot, await load(null, null), { x, onZoom: load, key: `compare/${name}` });
    cleanups.push(chart.destroy);
  }));
}

function union(objects) {
  return [...new Set(objects.flatMap((o) => Object.keys(o || {})))].sort();
}
