// The text preview: a node's text, number and JSON outputs as a few wrapped lines.
// Artifacts show by name (images and audio have their own previews), and outputs drawn
// as a loss chart or a table are left to those.

import { curveFrom } from "./chart.js";
import { finite, formatNumber, wrapText } from "./format.js";
import { markdownTable } from "./table.js";

const PREVIEW_LINES = 6;

export function previewLines(node, ctx) {
  // [line] to draw under the node's widgets, wrapped to its width in ctx.
  const outputs = node.fbState?.outputs;
  if (!outputs) return [];
  const hasTable = Object.values(outputs).some((v) => markdownTable(v));
  const parts = [];
  for (const [name, value] of Object.entries(outputs)) {
    if (value && typeof value === "object" && value.id && value.kind) {
      if (value.kind !== "image" && value.kind !== "audio") parts.push(`${name}: ${value.name || value.kind}`);
      continue;
    }
    if (name === "usage") continue;
    if (name === "loss_curve" && curveFrom(value).length) continue; // drawn as a chart
    if (markdownTable(value)) continue; // drawn as a table
    // Beside a table, the same figures as JSON are noise.
    if (value && typeof value === "object" && hasTable) continue;
    const shown = typeof value === "string" ? value : finite(value) && !Number.isInteger(value) ? formatNumber(value) : JSON.stringify(value);
    parts.push(Object.keys(outputs).length > 1 ? `${name}: ${shown}` : shown);
  }
  ctx.font = "12px sans-serif";
  const lines = [];
  for (const part of parts) {
    lines.push(...wrapText(ctx, part, node.size[0] - 16, PREVIEW_LINES));
    if (lines.length >= PREVIEW_LINES) break;
  }
  return lines.slice(0, PREVIEW_LINES);
}
