// Line charts on uPlot: one or more series over step or time, the downsample's
// min/max band, smoothing (exponential moving average), log scale, and zoom
// by dragging (fetching detail for the range) with double-click to reset.

const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7d8c",
  "#57606a"];
export const charts = (window.__mltrailCharts = window.__mltrailCharts || {});

export function color(i) { return COLORS[i % COLORS.length]; }

// Points sorted by x (stable: repeated or out-of-order steps keep logged order).
function sorted(d) {
  const order = d.xs.map((_, i) => i);
  let ordered = true;
  for (let i = 1; i < d.xs.length; i++) if (d.xs[i] < d.xs[i - 1]) { ordered = false; break; }
  if (ordered) return d;
  order.sort((a, b) => d.xs[a] - d.xs[b] || a - b);
  const pick = (arr) => order.map((i) => arr[i]);
  return { ...d, xs: pick(d.xs), ys: pick(d.ys), mins: pick(d.mins), maxs: pick(d.maxs) };
}

function smoothed(ys, weight) {
  if (!weight) return ys;
  let last = null;
  return ys.map((y) => {
    if (y === null || y === undefined) return y;
    last = last === null ? y : last * weight + (1 - weight) * y;
    return last;
  });
}

function positive(d) { return d.ys.every((y) => y === null || y > 0); }

// datasets: [{label, xs, ys, mins, maxs, downsampled}]; options: {x, smooth, log,
// onZoom(lo, hi) -> Promise<datasets>, key (registry name for tests)}.
export function lineChart(el, datasets, options) {
  let current = datasets.map(sorted);
  const single = current.length === 1;
  const width = () => Math.max(320, el.clientWidth || 600);
  const useLog = options.log && current.every(positive);
  const note = options.log && !useLog ? "log scale needs positive values: shown linear" : "";

  const build = () => {
    const series = [{ label: options.x === "time" ? "time" : "step" }];
    let data;
    if (single) {
      const d = current[0];
      data = [d.xs, smoothed(d.ys, options.smooth), d.maxs, d.mins];
      series.push({ label: d.label, stroke: color(0), width: 1.5, spanGaps: true },
        { label: "max", stroke: "transparent", points: { show: false } },
        { label: "min", stroke: "transparent", points: { show: false } });
    } else {
      data = uPlot.join(current.map((d) => [d.xs, smoothed(d.ys, options.smooth)]));
      current.forEach((d, i) => series.push({ label: d.label, stroke: color(i), width: 1.5,
        spanGaps: true }));
    }
    return { data, series };
  };

  const { data, series } = build();
  const opts = {
    width: width(), height: 260, series,
    scales: { x: { time: options.x === "time" }, y: useLog ? { distr: 3 } : {} },
    bands: single ? [{ series: [2, 3], fill: "rgba(31,111,235,0.12)" }] : [],
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
    hooks: { setSelect: [(u) => {
      if (u.select.width < 2 || !options.onZoom) return;
      const lo = u.posToVal(u.select.left, "x");
      const hi = u.posToVal(u.select.left + u.select.width, "x");
      u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
      refetch(lo, hi);
    }] },
  };
  const u = new uPlot(opts, data, el);
  const refetch = async (lo, hi) => {
    el.dataset.loading = "1";
    current = (await options.onZoom(lo, hi)).map(sorted);
    const next = build();
    u.setData(next.data, true);
    el.dataset.loading = "";
    el.dataset.zoomed = lo === null ? "" : "1";
  };
  u.over.addEventListener("dblclick", () => { if (options.onZoom) refetch(null, null); });
  const resize = () => u.setSize({ width: width(), height: 260 });
  window.addEventListener("resize", resize);
  if (options.key) charts[options.key] = u;
  return { u, note, destroy: () => { window.removeEventListener("resize", resize);
    if (options.key) delete charts[options.key]; u.destroy(); } };
}

// A bar chart (histograms: residuals, prediction bins).
export function barChart(el, labels, values, title) {
  const xs = labels.map((_, i) => i);
  const u = new uPlot({
    width: Math.max(320, el.clientWidth || 600), height: 220,
    series: [{ label: "bin", value: (u, i) => (i === null ? "" : labels[i]) },
      { label: title, stroke: color(0), fill: "rgba(31,111,235,0.35)",
        paths: uPlot.paths.bars({ size: [0.9] }), points: { show: false } }],
    scales: { x: { time: false } },
    axes: [{ values: (u, ticks) => ticks.map((t) => labels[t] ?? "") }, {}],
  }, [xs, values], el);
  return u;
}
