// Azure ML v1's JSON-schema metrics drawn as what they are: a confusion matrix as
// a shaded grid, an accuracy table as ROC curves per class, residuals as a
// histogram, predictions as binned averages with their errors.

import { barChart, lineChart } from "./chart.js";
import { fmtNumber, h, table } from "./dom.js";

export function jsonMetric(kind, doc) {
  const data = (doc && doc.data) || {};
  try {
    if (kind === "confusion_matrix" && Array.isArray(data.matrix)) return confusion(data);
    if (kind === "accuracy_table" && Array.isArray(data.probability_tables)) return roc(data);
    if (kind === "residuals" && Array.isArray(data.bin_counts)) return residuals(data);
    if (kind === "predictions" && Array.isArray(data.bin_averages)) return predictions(data);
  } catch (err) {
    return h("div", {}, h("p", { class: "muted" }, `cannot draw: ${err.message}`), raw(doc));
  }
  return raw(doc);
}

function raw(doc) {
  return h("pre", { class: "json" }, JSON.stringify(doc, null, 2));
}

function confusion(data) {
  const labels = data.class_labels || data.matrix.map((_, i) => String(i));
  const peak = Math.max(1, ...data.matrix.flat().map(Number).filter(Number.isFinite));
  const cell = (v) => h("td", { class: "cm-cell",
    style: `background: rgba(31,111,235,${(Number(v) / peak * 0.85).toFixed(3)})` }, fmtNumber(v));
  return h("table", { class: "confusion" },
    h("thead", {}, h("tr", {}, h("th", {}, "true \\ predicted"), labels.map((l) => h("th", {}, l)))),
    h("tbody", {}, data.matrix.map((row, i) => h("tr", {}, h("th", {}, labels[i] ?? i),
      row.map(cell)))));
}

function roc(data) {
  const labels = data.class_labels || data.probability_tables.map((_, i) => String(i));
  const box = h("div", { class: "plot" });
  const sets = data.probability_tables.map((rows, c) => {
    const points = rows.map(([tp, fp, tn, fn]) => [fp / Math.max(1, fp + tn), tp / Math.max(1, tp + fn)]);
    points.sort((a, b) => a[0] - b[0]);
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    return { label: `class ${labels[c]}`, xs, ys, mins: ys, maxs: ys };
  });
  queueMicrotask(() => lineChart(box, sets, { x: "step" }));
  return h("div", {}, h("p", { class: "muted" }, "ROC per class (x: false positive rate, y: true positive rate)"), box);
}

function residuals(data) {
  const edges = data.bin_edges || [];
  const labels = data.bin_counts.map((_, i) => edges.length > i + 1
    ? `${fmtNumber(edges[i])}…${fmtNumber(edges[i + 1])}` : String(i));
  const box = h("div", { class: "plot" });
  queueMicrotask(() => barChart(box, labels, data.bin_counts.map(Number), "count"));
  return h("div", {}, h("p", { class: "muted" }, "Residuals histogram"), box);
}

function predictions(data) {
  const rows = data.bin_averages.map((avg, i) => [i, fmtNumber(avg),
    fmtNumber((data.bin_errors || [])[i]), fmtNumber((data.bin_counts || [])[i])]);
  const box = h("div", { class: "plot" });
  const xs = data.bin_averages.map((_, i) => i);
  const ys = data.bin_averages.map(Number);
  const err = (data.bin_errors || []).map(Number);
  queueMicrotask(() => lineChart(box, [{ label: "bin average", xs, ys,
    mins: ys.map((y, i) => y - (err[i] || 0)), maxs: ys.map((y, i) => y + (err[i] || 0)) }],
  { x: "step" }));
  return h("div", {}, h("p", { class: "muted" }, "Predictions by bin (band: ± error)"), box,
    table(["bin", "average", "error", "count"], rows));
}
