// The loss-chart preview: a loss curve read from the shapes a node may output or from the
// live progress points of a run, drawn as a line chart with a caption (latest loss, step,
// epoch and, while running, the time left).

import { finite, formatDuration, formatNumber } from "./format.js";

const CHART_HEIGHT = 96; // the plot of a loss curve, in canvas units
export const CHART_BLOCK = CHART_HEIGHT + 40; // plus its caption and axis labels
const CHART_COLOUR = "#e0a526";

export function curveFrom(value) {
  // A loss curve in the shapes a node may output — [loss, …], [[step, loss], …],
  // [{step, loss, …}, …] or {step: […], loss: […]} — as [{step, loss, …}] sorted by step.
  // Items that are not points (an event summary's "… 12 more") are skipped.
  const points = [];
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      if (finite(item)) points.push({ step: i + 1, loss: item });
      else if (Array.isArray(item) && finite(item[0]) && finite(item[1])) points.push({ step: item[0], loss: item[1] });
      else if (item && typeof item === "object" && finite(item.loss)) {
        points.push({ ...item, step: finite(item.step) ? item.step : i + 1 });
      }
    });
  } else if (value && typeof value === "object") {
    const losses = value.loss ?? value.losses;
    const steps = value.step ?? value.steps ?? [];
    if (Array.isArray(losses)) {
      losses.forEach((loss, i) => {
        if (finite(loss)) points.push({ step: finite(steps[i]) ? steps[i] : i + 1, loss });
      });
    }
  }
  return points.sort((a, b) => a.step - b.step);
}

export function curvePoints(node) {
  // The loss curve to draw: the live one from progress metrics, or the node's
  // `loss_curve` output when that has more points (a cached node has no live curve).
  const s = node.fbState;
  if (!s) return [];
  const live = curveFrom(s.curve || []);
  const final = curveFrom(s.outputs?.loss_curve);
  return final.length > live.length ? final : live;
}

export function drawCurve(ctx, node, b) {
  // A line chart of loss against step in block b ({y, points}), node coordinates.
  const points = b.points;
  const last = points[points.length - 1];
  const running = node.fbState.status === "running";
  let caption = `loss ${formatNumber(last.loss)} · step ${last.step}`;
  if (finite(last.epoch)) caption += ` · epoch ${formatNumber(last.epoch)}`;
  if (running && finite(last.eta_s)) caption += ` · eta ${formatDuration(last.eta_s)}`;
  ctx.fillStyle = "#ddd";
  ctx.fillText(caption, 8, b.y + 13);
  const x0 = 44;
  const x1 = node.size[0] - 10;
  const y0 = b.y + 22;
  const y1 = y0 + CHART_HEIGHT;
  ctx.fillStyle = "#1a1a1a";
  ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
  let lo = Math.min(...points.map((p) => p.loss));
  let hi = Math.max(...points.map((p) => p.loss));
  const pad = hi - lo > 1e-9 ? (hi - lo) * 0.08 : Math.max(Math.abs(hi) * 0.05, 0.01);
  lo -= pad;
  hi += pad;
  const first = points[0].step;
  const span = last.step - first || 1;
  const px = (step) => (points.length === 1 ? (x0 + x1) / 2 : x0 + ((step - first) / span) * (x1 - x0));
  const py = (loss) => y1 - ((loss - lo) / (hi - lo)) * (y1 - y0);
  ctx.strokeStyle = "#333";
  ctx.lineWidth = 1;
  for (let k = 1; k < 4; k++) {
    const gy = Math.round(y0 + (k * (y1 - y0)) / 4) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x0, gy);
    ctx.lineTo(x1, gy);
    ctx.stroke();
  }
  ctx.strokeStyle = "#555";
  ctx.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#999";
  ctx.textAlign = "right";
  ctx.fillText(formatNumber(hi), x0 - 4, y0 + 8);
  ctx.fillText(formatNumber(lo), x0 - 4, y1);
  ctx.fillText(String(last.step), x1, y1 + 12);
  ctx.textAlign = "left";
  ctx.fillText(`step ${first}`, x0, y1 + 12);
  ctx.strokeStyle = CHART_COLOUR;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(px(p.step), py(p.loss)) : ctx.moveTo(px(p.step), py(p.loss))));
  ctx.stroke();
  if (points.length <= 60) {
    ctx.fillStyle = CHART_COLOUR;
    for (const p of points) {
      ctx.beginPath();
      ctx.arc(px(p.step), py(p.loss), 2, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}
