// The runs table: filters, metric columns, sort and page, all kept in the URL.

import { get } from "./api.js";
import { clear, fmtDuration, fmtNumber, fmtTime, h, runLabel, statusBadge } from "./dom.js";

const STATUSES = ["", "Running", "Completed", "Failed", "Canceled"];
const FIELDS = [["name", "Name"], ["experiment", "Experiment"], ["status", "Status"],
  ["start", "Start"], ["duration", "Duration"]];

export async function renderRuns({ app, params, navigate }) {
  const query = new URLSearchParams(params);
  if (!query.has("limit")) query.set("limit", "50");
  const [experiments, page] = await Promise.all([get("experiments"), get("runs", query)]);
  const selected = new Set();
  const columns = page.columns;

  const go = (changes) => {
    const next = new URLSearchParams(params);
    for (const [key, value] of Object.entries(changes)) {
      next.delete(key);
      for (const v of [].concat(value)) if (v !== "" && v !== null && v !== undefined) next.append(key, v);
    }
    if (!("offset" in changes)) next.delete("offset");
    navigate("/runs", next);
  };

  const form = filterForm(params, experiments.experiments, go);
  const sort = canonicalSort(params.get("sort") || "-start");
  const header = (key, label) => {
    const active = sort.replace(/^-/, "") === key;
    const arrow = active ? (sort.startsWith("-") ? " ▼" : " ▲") : "";
    return h("th", { class: "sortable", dataset: { sort: key },
      onclick: () => go({ sort: active && sort.startsWith("-") ? key : `-${key}` }) },
      label + arrow);
  };
  const compareButton = h("button", { type: "button", disabled: true, id: "compare-button",
    onclick: () => navigate("/compare", new URLSearchParams({ runs: [...selected].join(",") })) },
    "Compare selected");
  const rows = page.runs.map((run) => h("tr", { dataset: { run: run.run_id } },
    h("td", {}, h("input", { type: "checkbox", class: "pick", onchange: (e) => {
      if (e.target.checked) selected.add(run.run_id); else selected.delete(run.run_id);
      compareButton.disabled = selected.size < 2;
    } })),
    h("td", {}, h("a", { href: `#/run/${encodeURIComponent(run.run_id)}` }, runLabel(run)),
      run.parent_run_id ? h("span", { class: "muted" }, " (child)") : null),
    h("td", {}, run.experiment),
    h("td", {}, statusBadge(run.status)),
    h("td", {}, fmtTime(run.start_time_unix_nano)),
    h("td", { class: "num" }, fmtDuration(run.duration_ns)),
    columns.map((c) => h("td", { class: "num metric", dataset: { column: c } },
      fmtNumber(run.metrics[c]))),
    h("td", {}, tagList(run.tags))));

  const offset = page.offset;
  const last = Math.min(offset + page.limit, page.total);
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", disabled: offset === 0,
      onclick: () => go({ offset: String(Math.max(0, offset - page.limit)) }) }, "‹ Previous"),
    h("span", { id: "runs-count" }, page.total ? `${offset + 1}–${last} of ${page.total}` : "no runs"),
    h("button", { type: "button", disabled: last >= page.total,
      onclick: () => go({ offset: String(offset + page.limit) }) }, "Next ›"),
    compareButton);

  clear(app, h("h1", {}, "Runs"), form, pager,
    h("table", { class: "runs", id: "runs-table" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), FIELDS.map(([k, l]) => header(k, l)),
        columns.map((c) => header(c, c)), h("th", {}, "Tags"))),
      h("tbody", {}, rows)));
}

// "loss" and "-loss" name the column "loss:last", as the API reads them.
function canonicalSort(sort) {
  const key = sort.replace(/^-/, "");
  const named = FIELDS.some(([k]) => k === key) || /:(last|min|max)$/.test(key);
  return named ? sort : `${sort}:last`;
}

function tagList(tags) {
  return Object.keys(tags).sort().map((k) => h("span", { class: "tag" },
    tags[k] ? `${k}=${tags[k]}` : k));
}

function filterForm(params, experiments, go) {
  const field = (name, label, input) => h("label", {}, label, input);
  const experiment = h("select", { name: "experiment" },
    h("option", { value: "" }, "any experiment"),
    experiments.map((e) => h("option", { value: e.name, selected: params.get("experiment") === e.name },
      `${e.name || "(none)"} (${e.runs})`)));
  const status = h("select", { name: "status" }, STATUSES.map((s) =>
    h("option", { value: s, selected: (params.get("status") || "") === s }, s || "any status")));
  const tags = h("input", { name: "tag", placeholder: "team=vision, baseline",
    value: params.getAll("tag").join(", ") });
  const where = h("input", { name: "where", placeholder: "accuracy > 0.9; loss:min < 0.2",
    value: params.getAll("where").join("; "), size: 28 });
  const columns = h("input", { name: "columns", placeholder: "accuracy, loss:min",
    value: params.get("columns") || "", size: 22 });
  const apply = (e) => {
    e.preventDefault();
    go({
      experiment: experiment.value, status: status.value,
      tag: tags.value.split(",").map((s) => s.trim()).filter(Boolean),
      where: where.value.split(";").map((s) => s.trim()).filter(Boolean),
      columns: columns.value.split(",").map((s) => s.trim()).filter(Boolean).join(","),
    });
  };
  return h("form", { class: "filters", id: "runs-filters", onsubmit: apply },
    field("experiment", "Experiment", experiment), field("status", "Status", status),
    field("tag", "Tags", tags), field("where", "Metric filter", where),
    field("columns", "Metric columns", columns),
    h("button", { type: "submit" }, "Apply"));
}
