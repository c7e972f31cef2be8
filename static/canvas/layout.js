// Where a node's previews sit under its widgets, top to bottom: messages (issues, an
// error, a running node's message), the loss chart, tables, text lines, images and audio.
// Drawing, clicks and the node's size all use this one layout.

import { CHART_BLOCK, curvePoints } from "./chart.js";
import { wrapText } from "./format.js";
import { previewRefs } from "./media.js";
import { TABLE_MAX_WIDTH, previewTables } from "./table.js";
import { previewLines } from "./text.js";

const PREVIEW_WIDTH = 300;

function previewTop(node) {
  const base = node.computeSize();
  return base[1] + 4;
}

export function layout(node, ctx) {
  // [{kind: "message"|"curve"|"table"|"lines"|"image"|"audio", y, h, …}] in node
  // coordinates; ctx measures text.
  const s = node.fbState;
  if (!s) return [];
  const blocks = [];
  let y = previewTop(node);
  const push = (block) => {
    block.y = y;
    blocks.push(block);
    y += block.h;
  };
  ctx.font = "12px sans-serif";
  const messages = [...(s.issues || [])];
  if (s.error) messages.push(s.error);
  if (s.status === "running" && s.message) messages.push(s.message);
  for (const m of messages) {
    const lines = wrapText(ctx, m, node.size[0] - 16, 4);
    push({ kind: "message", lines, h: 14 * lines.length });
  }
  const points = curvePoints(node);
  if (points.length) push({ kind: "curve", points, h: CHART_BLOCK });
  for (const t of previewTables(node, ctx)) push({ kind: "table", ...t, h: t.height });
  const lines = previewLines(node, ctx);
  if (lines.length) push({ kind: "lines", lines, h: 14 * lines.length });
  for (const ref of previewRefs(node, "image")) push({ kind: "image", ref, h: 110 });
  for (const ref of previewRefs(node, "audio")) push({ kind: "audio", ref, h: 24 });
  return blocks;
}

export function fitPreview(node, ctx) {
  // Widen the node for its previews (charts, text and images to PREVIEW_WIDTH, tables
  // to their width up to TABLE_MAX_WIDTH) and make it tall enough for all of them.
  let blocks = layout(node, ctx);
  const wide = blocks.some((b) => ["curve", "lines", "image"].includes(b.kind));
  const tableWidth = Math.max(0, ...blocks.filter((b) => b.kind === "table").map((b) => b.width + 16));
  const width = Math.max(node.size[0], wide ? PREVIEW_WIDTH : 0, Math.min(tableWidth, TABLE_MAX_WIDTH));
  if (width !== node.size[0]) {
    node.size[0] = width;
    blocks = layout(node, ctx); // text wraps differently at the new width
  }
  const last = blocks[blocks.length - 1];
  if (last) node.size[1] = Math.max(node.size[1], last.y + last.h + 8);
}

export function blockAt(blocks, pos) {
  // The block under pos ([x, y] in node coordinates), or undefined.
  return blocks.find((b) => pos[1] >= b.y && pos[1] < b.y + b.h);
}
