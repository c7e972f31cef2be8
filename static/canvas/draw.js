// A node's run state drawn over it: a red frame for problems, the status badge with the
// elapsed time, the progress bar of a running node, then each block of its preview layout.

import { LiteGraph } from "litegraph/litegraph.es.js";
import { drawCurve } from "./chart.js";
import { drawTable } from "./table.js";

const STATUS_COLOURS = {
  queued: "#777",
  running: "#e0a526",
  cached: "#3a9ad9",
  done: "#3bb273",
  failed: "#e05252",
  skipped: "#999",
  cancelled: "#b07cd8",
};

export function drawState(ctx, node, layout, media) {
  // layout() → the node's preview blocks (it sets ctx's font, so it runs after the badge);
  // media: {image(ref) → HTMLImageElement, playing(ref) → bool}.
  const s = node.fbState;
  if (!s) return;
  const w = node.size[0];
  const titleH = LiteGraph.NODE_TITLE_HEIGHT;
  if (s.issues?.length || s.status === "failed") {
    ctx.strokeStyle = STATUS_COLOURS.failed;
    ctx.lineWidth = 3;
    ctx.strokeRect(-3, -titleH - 3, w + 6, node.size[1] + titleH + 6);
  }
  if (s.status) {
    let elapsed = s.elapsed_s;
    if (s.status === "running" && s.startedMs) elapsed = (Date.now() - s.startedMs) / 1000;
    const label = s.status + (elapsed !== undefined && elapsed !== null ? ` ${elapsed.toFixed(elapsed < 10 ? 2 : 1)} s` : "");
    ctx.font = "11px sans-serif";
    const tw = ctx.measureText(label).width + 10;
    ctx.fillStyle = STATUS_COLOURS[s.status] || "#777";
    ctx.fillRect(w - tw - 4, -titleH + 5, tw, 16);
    ctx.fillStyle = "#111";
    ctx.fillText(label, w - tw + 1, -titleH + 17);
  }
  if (s.status === "running" && s.fraction !== undefined && s.fraction !== null) {
    ctx.fillStyle = "#333";
    ctx.fillRect(0, -3, w, 3);
    ctx.fillStyle = STATUS_COLOURS.running;
    ctx.fillRect(0, -3, w * s.fraction, 3);
  }
  for (const b of layout()) {
    ctx.save();
    ctx.font = "12px sans-serif";
    ctx.textAlign = "left";
    if (b.kind === "message") {
      ctx.fillStyle = s.status === "running" ? "#ccc" : "#ff8a8a";
      b.lines.forEach((line, i) => ctx.fillText(line, 8, b.y + 12 + 14 * i));
    } else if (b.kind === "curve") {
      drawCurve(ctx, node, b);
    } else if (b.kind === "table") {
      drawTable(ctx, b);
    } else if (b.kind === "lines") {
      ctx.fillStyle = "#ddd";
      b.lines.forEach((line, i) => ctx.fillText(line, 8, b.y + 12 + 14 * i));
    } else if (b.kind === "image") {
      const img = media.image(b.ref);
      if (img.complete && img.naturalWidth) {
        const h = 100;
        const iw = Math.min(w - 16, (img.naturalWidth / img.naturalHeight) * h);
        ctx.drawImage(img, 8, b.y + 4, iw, h);
      }
    } else if (b.kind === "audio") {
      const playing = media.playing(b.ref);
      ctx.fillStyle = "#2d5d8a";
      ctx.fillRect(8, b.y + 2, w - 16, 20);
      ctx.fillStyle = "#fff";
      ctx.fillText(`${playing ? "❚❚ pause" : "▶ play"}  ${b.ref.name || "audio"}`, 14, b.y + 16);
    }
    ctx.restore();
  }
}
