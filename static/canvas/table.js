// The Markdown-table preview (a Compare node's report): the first GitHub-style table in a
// text output, measured as a monospace grid and drawn with a bold header band, striped
// rows and numbers right-aligned; the lines around it as plain text.

import { clip } from "./format.js";

const TABLE_ROW = 16;
const TABLE_MAX_ROWS = 14;
export const TABLE_MAX_WIDTH = 760;
const TABLE_CELL_CHARS = 28;
const MONO = "11px ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace";

export function markdownTable(text) {
  // The first GitHub-style Markdown table in text, or null:
  // {before: [line], header: [cell], align: ["left"|"right"|"center"], rows: [[cell]], after: [line]}.
  if (typeof text !== "string" || !text.includes("|")) return null;
  const lines = text.replace(/\r/g, "").split("\n");
  const sep = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;
  const cells = (line) => {
    let s = line.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|")) s = s.slice(0, -1);
    return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|").replace(/\*\*|__|`/g, ""));
  };
  const plain = (l) => l.replace(/\*\*|__|`/g, "").replace(/^#+\s*/, "");
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!lines[i].includes("|") || !sep.test(lines[i + 1])) continue;
    const header = cells(lines[i]);
    const align = cells(lines[i + 1]).map((c) =>
      c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : "left",
    );
    const rows = [];
    let j = i + 2;
    while (j < lines.length && lines[j].includes("|") && lines[j].trim()) rows.push(cells(lines[j++]));
    // Numbers read best right-aligned, whatever the separator says.
    header.forEach((_, c) => {
      const column = rows.map((r) => r[c] ?? "").filter((v) => v && v !== "—" && v !== "-");
      if (column.length && column.every((v) => /^[+\-−]?[\d.,]+\s*(%|×|x|MB|GB|KB|B|s|ms|tok\/s)?$/.test(v))) {
        align[c] = "right";
      }
    });
    return {
      before: lines.slice(0, i).filter((l) => l.trim()).map(plain),
      header,
      align,
      rows,
      after: lines.slice(j).filter((l) => l.trim()).map(plain),
    };
  }
  return null;
}

export function previewTables(node, ctx) {
  // Text outputs holding a Markdown table, laid out for a monospace grid:
  // [{name, text, table, cols: [{x, w}], width, shown, height}], sizes in canvas units.
  const outputs = node.fbState?.outputs || {};
  const found = [];
  for (const [name, value] of Object.entries(outputs)) {
    const table = markdownTable(value);
    if (!table) continue;
    ctx.font = `bold ${MONO}`;
    const widths = table.header.map((h) => ctx.measureText(clip(h, TABLE_CELL_CHARS)).width);
    ctx.font = MONO;
    for (const row of table.rows) {
      row.forEach((cell, c) => {
        if (c < widths.length) widths[c] = Math.max(widths[c], ctx.measureText(clip(cell, TABLE_CELL_CHARS)).width);
      });
    }
    const cols = [];
    let x = 0;
    for (const w of widths) {
      cols.push({ x, w: w + 12 });
      x += w + 12;
    }
    const shown = Math.min(table.rows.length, TABLE_MAX_ROWS);
    const more = table.rows.length > shown ? 1 : 0;
    const lines = table.before.length + 1 + shown + more + table.after.length;
    found.push({ name, text: value, table, cols, width: x, shown, height: lines * TABLE_ROW + 10 });
  }
  return found;
}

export function drawTable(ctx, b) {
  // Block b: one of previewTables' entries placed at b.y (node coordinates).
  const { table, cols } = b;
  let y = b.y + 4;
  ctx.font = MONO;
  ctx.fillStyle = "#bbb";
  for (const line of table.before) {
    ctx.fillText(clip(line, 110), 8, y + 12);
    y += TABLE_ROW;
  }
  const cell = (text, c, rowY) => {
    const col = cols[c];
    if (!col) return;
    const shown = clip(text ?? "", TABLE_CELL_CHARS);
    if (table.align[c] === "right") {
      ctx.textAlign = "right";
      ctx.fillText(shown, 8 + col.x + col.w - 6, rowY + 12);
    } else if (table.align[c] === "center") {
      ctx.textAlign = "center";
      ctx.fillText(shown, 8 + col.x + col.w / 2, rowY + 12);
    } else {
      ctx.textAlign = "left";
      ctx.fillText(shown, 8 + col.x + 6, rowY + 12);
    }
  };
  ctx.fillStyle = "#2b3442";
  ctx.fillRect(8, y, b.width, TABLE_ROW);
  ctx.font = `bold ${MONO}`;
  ctx.fillStyle = "#eee";
  table.header.forEach((h, c) => cell(h, c, y));
  y += TABLE_ROW;
  ctx.font = MONO;
  table.rows.slice(0, b.shown).forEach((row, r) => {
    ctx.fillStyle = r % 2 ? "#262626" : "#1d1d1d";
    ctx.fillRect(8, y, b.width, TABLE_ROW);
    ctx.fillStyle = "#ddd";
    row.forEach((v, c) => cell(v, c, y));
    y += TABLE_ROW;
  });
  ctx.strokeStyle = "#555";
  ctx.lineWidth = 1;
  ctx.strokeRect(8.5, b.y + 4 + table.before.length * TABLE_ROW + 0.5, b.width - 1, (1 + b.shown) * TABLE_ROW - 1);
  ctx.textAlign = "left";
  ctx.fillStyle = "#999";
  if (table.rows.length > b.shown) {
    ctx.fillText(`… ${table.rows.length - b.shown} more rows (click to open)`, 8, y + 12);
    y += TABLE_ROW;
  }
  ctx.fillStyle = "#bbb";
  for (const line of table.after) {
    ctx.fillText(clip(line, 110), 8, y + 12);
    y += TABLE_ROW;
  }
}
