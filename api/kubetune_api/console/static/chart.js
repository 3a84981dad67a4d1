// The loss curve as SVG: train loss (line) and eval loss (line with dots) against the step.
//
// Drawn from `GET /api/finetune/metrics/{job_id}` ({train: [{step, loss, ...}],
// eval: [{step, loss, ...}]}); the svg carries `data-train-points` / `data-eval-points`.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 300;
const MARGIN = { left: 56, right: 16, top: 16, bottom: 40 };

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

function finitePoints(rows) {
  return (Array.isArray(rows) ? rows : []).filter(
    (p) => p && Number.isFinite(p.step) && Number.isFinite(p.loss),
  );
}

/** A fresh, empty chart element (an `<svg>` the page keeps and redraws). */
export function createChart() {
  return svgEl("svg", {
    class: "loss-chart",
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": "loss curve",
    "data-train-points": 0,
    "data-eval-points": 0,
  });
}

/** Redraw `svg` from a metrics answer; returns how many points it drew. */
export function drawChart(svg, metrics) {
  const train = finitePoints(metrics && metrics.train);
  const evals = finitePoints(metrics && metrics.eval);
  svg.replaceChildren();
  svg.setAttribute("data-train-points", train.length);
  svg.setAttribute("data-eval-points", evals.length);
  const all = [...train, ...evals];
  if (all.length === 0) return 0;

  const steps = all.map((p) => p.step);
  const losses = all.map((p) => p.loss);
  let [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  let [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  if (x1 === x0) x1 = x0 + 1;
  const pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.1 || 1;
  [y0, y1] = [Math.max(0, y0 - pad), y1 + pad];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (v) => MARGIN.left + ((v - x0) / (x1 - x0)) * plotW;
  const sy = (v) => MARGIN.top + (1 - (v - y0) / (y1 - y0)) * plotH;

  const grid = svgEl("g", { class: "grid" });
  for (const t of niceTicks(y0, y1)) {
    grid.append(svgEl("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: sy(t), y2: sy(t) }));
    grid.append(svgEl("text", { x: MARGIN.left - 6, y: sy(t) + 4, class: "tick y" }, `${t}`));
  }
  for (const t of niceTicks(x0, x1).filter((v) => Number.isInteger(v))) {
    grid.append(svgEl("text", { x: sx(t), y: HEIGHT - MARGIN.bottom + 16, class: "tick x" }, `${t}`));
  }
  svg.append(grid);
  svg.append(
    svgEl("line", {
      class: "axis",
      x1: MARGIN.left,
      x2: WIDTH - MARGIN.right,
      y1: HEIGHT - MARGIN.bottom,
      y2: HEIGHT - MARGIN.bottom,
    }),
    svgEl("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom }),
    svgEl("text", { class: "axis-label", x: MARGIN.left + plotW / 2, y: HEIGHT - 6 }, "step"),
    svgEl("text", { class: "axis-label", x: 12, y: MARGIN.top + plotH / 2, transform: `rotate(-90 12 ${MARGIN.top + plotH / 2})` }, "loss"),
  );

  const line = (points, cls) =>
    svgEl("polyline", { class: cls, points: points.map((p) => `${sx(p.step).toFixed(1)},${sy(p.loss).toFixed(1)}`).join(" ") });
  if (train.length) svg.append(line(train, "train-line"));
  if (train.length === 1) svg.append(svgEl("circle", { class: "train-dot", cx: sx(train[0].step), cy: sy(train[0].loss), r: 3 }));
  if (evals.length) {
    svg.append(line(evals, "eval-line"));
    const dots = svgEl("g", { class: "eval-dots" });
    for (const p of evals) dots.append(svgEl("circle", { cx: sx(p.step), cy: sy(p.loss), r: 3.5 }));
    svg.append(dots);
  }
  const legend = svgEl("g", { class: "legend", transform: `translate(${WIDTH - MARGIN.right - 170} ${MARGIN.top + 4})` });
  legend.append(
    svgEl("line", { class: "train-line", x1: 0, x2: 22, y1: 6, y2: 6 }),
    svgEl("text", { x: 28, y: 10 }, "train loss"),
    svgEl("line", { class: "eval-line", x1: 92, x2: 114, y1: 6, y2: 6 }),
    svgEl("text", { x: 120, y: 10 }, "eval loss"),
  );
  svg.append(legend);
  return all.length;
}
