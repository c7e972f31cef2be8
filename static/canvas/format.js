// Formatting shared by the previews: numbers, durations, clipped and wrapped text, and
// plain copies of Vue props. Pure functions; wrapText only measures with the 2D context.

export function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

export function formatNumber(x) {
  if (!finite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 0.001 || a >= 1e5)) return x.toExponential(2);
  return x.toPrecision(4).replace(/\.?0+$/, "");
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function clip(text, chars) {
  const s = String(text);
  return s.length > chars ? `${s.slice(0, chars - 1)}…` : s;
}

export function clone(value) {
  // Props arrive as Vue proxies, which structuredClone refuses.
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

export function wrapText(ctx, text, width, maxLines) {
  // At most maxLines lines of text no wider than width (canvas units, in ctx's font).
  const lines = [];
  for (const para of String(text).split("\n")) {
    let line = "";
    for (let word of para.split(" ")) {
      // A "word" wider than the node (JSON, a path) is cut into pieces that fit.
      while (ctx.measureText(word).width > width && word.length > 1 && lines.length < maxLines) {
        let n = Math.max(1, Math.floor((word.length * width) / ctx.measureText(word).width));
        while (n > 1 && ctx.measureText(word.slice(0, n)).width > width) n--;
        if (line) lines.push(line);
        lines.push(word.slice(0, n));
        line = "";
        word = word.slice(n);
      }
      if (lines.length >= maxLines) break;
      const next = line ? `${line} ${word}` : word;
      if (ctx.measureText(next).width > width && line) {
        lines.push(line);
        line = word;
      } else {
        line = next;
      }
      if (lines.length >= maxLines) break;
    }
    lines.push(line);
    if (lines.length >= maxLines) break;
  }
  if (lines.length > maxLines) lines.length = maxLines;
  return lines;
}
