// The flowbuilder canvas: a LiteGraph editor wrapped as a NiceGUI (Vue) component.
//
// Everything about node types comes from the registry's catalogue (props.catalogue) and
// the port-type compatibility table (props.compat), both computed in Python: nothing is
// hand-listed here. The graph this component saves is LiteGraph's own serialisation,
// with every parameter kept by name in node.properties, so the CLI runs it unchanged.

import { LGraph, LGraphCanvas, LGraphNode, LiteGraph } from "litegraph/litegraph.es.js";
import { installInertMarkup } from "fb-menus/inert.js";

installInertMarkup(); // a graph's strings never become markup in LiteGraph's menus

const STATUS_COLOURS = {
  queued: "#777",
  running: "#e0a526",
  cached: "#3a9ad9",
  done: "#3bb273",
  failed: "#e05252",
  skipped: "#999",
  cancelled: "#b07cd8",
};
const PREVIEW_LINES = 6;
const PREVIEW_WIDTH = 300;
const CHART_HEIGHT = 96; // the plot of a loss curve, in canvas units
const CHART_BLOCK = CHART_HEIGHT + 40; // plus its caption and axis labels
const CHART_COLOUR = "#e0a526";
const TABLE_ROW = 16;
const TABLE_MAX_ROWS = 14;
const TABLE_MAX_WIDTH = 760;
const TABLE_CELL_CHARS = 28;
const MONO = "11px ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace";

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

function curveFrom(value) {
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

function markdownTable(text) {
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

function formatNumber(x) {
  if (!finite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 0.001 || a >= 1e5)) return x.toExponential(2);
  return x.toPrecision(4).replace(/\.?0+$/, "");
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function clip(text, chars) {
  const s = String(text);
  return s.length > chars ? `${s.slice(0, chars - 1)}…` : s;
}

function clone(value) {
  // Props arrive as Vue proxies, which structuredClone refuses.
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

function typeColour(type) {
  // A stable colour per port type (hue from a string hash).
  let h = 0;
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 60%, 60%)`;
}

function loadCss(href) {
  if (document.querySelector(`link[data-fb="${href}"]`)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  link.dataset.fb = href;
  document.head.append(link);
}

function wrapText(ctx, text, width, maxLines) {
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

export default {
  template: `<div class="fb-canvas-wrap" style="position:relative;width:100%;height:100%">
      <canvas ref="canvas" tabindex="1" style="display:block;width:100%;height:100%;outline:none"></canvas>
    </div>`,
  props: {
    catalogue: Array,
    compat: Object,
    graph: Object,
  },
  async mounted() {
    loadCss(import.meta.resolve("litegraph/css/litegraph.css"));
    this.images = {};
    this.audio = null;
    this.registerTypes();
    this.lgraph = new LGraph();
    this.lcanvas = new LGraphCanvas(this.$refs.canvas, this.lgraph);
    this.lcanvas.allow_searchbox = true;
    this.lcanvas.show_info = false;
    this.installDrop();
    this.installLinkRefusal();
    this.installTooltips();
    this.resize();
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(this.$el);
    if (this.graph) this.loadGraph(this.graph);
    this.lastSaved = null; // taken at the first poll, once LiteGraph has laid nodes out
    this.poll = setInterval(() => this.checkChanged(), 400);
    window.addEventListener("beforeunload", (e) => {
      if (this.lastSaved !== null && this.hasUnsavedChanges()) {
        e.preventDefault();
        e.returnValue = "";
      }
    });
    this.ticker = setInterval(() => {
      if (this.lgraph._nodes.some((n) => n.fbState?.status === "running")) this.lcanvas.setDirty(true, false);
    }, 200);
    window.fbCanvas = this; // for tests and the browser console
    this.$emit("ready");
  },
  unmounted() {
    clearInterval(this.poll);
    clearInterval(this.ticker);
    this.observer?.disconnect();
    if (window.fbCanvas === this) delete window.fbCanvas;
  },
  methods: {
    // ---- node types from the catalogue ------------------------------------------------
    registerTypes() {
      const compat = this.compat;
      LiteGraph.isValidConnection = (a, b) => {
        if (!a || !b || a === "*" || b === "*") return true;
        if (a === b || b === "any" || a === "any") return true;
        return (compat.allowed[a] || []).includes(b);
      };
      for (const type of compat.types) {
        LGraphCanvas.link_type_colors[type] = typeColour(type);
      }
      const component = this;
      for (const entry of this.catalogue) {
        class FlowNode extends LGraphNode {
          constructor(title) {
            super(title ?? entry.title);
            this.fbType = entry.type;
            for (const port of entry.inputs) {
              const slot = this.addInput(port.name, port.type);
              slot.color_on = slot.color_off = typeColour(port.type);
            }
            for (const out of entry.outputs) {
              const slot = this.addOutput(out.name, out.type);
              slot.color_on = slot.color_off = typeColour(out.type);
            }
            for (const param of entry.params) {
              if (param.schema.hidden) continue;
              this.properties[param.name] = clone(param.default ?? null);
              component.addParamWidget(this, param);
            }
            this.serialize_widgets = true;
            this.fbState = null;
            // LGraphNode sets its own onMouseDown (title buttons) on the instance, which
            // would shadow a method here: chain it, previews first.
            const base = this.onMouseDown;
            this.onMouseDown = (e, pos, canvas) => component.previewClick(this, pos) || !!base?.(e, pos, canvas);
            this.size = this.computeSize();
            this.size[0] = Math.max(this.size[0], 220);
          }
          onConfigure() {
            // Widgets show the parameters by name; widgets_values is never read.
            for (const w of this.widgets || []) {
              if (w.name in this.properties) w.value = component.widgetValue(w, this.properties[w.name]);
            }
            component.applyDynamicTypes(this);
          }
          onDrawForeground(ctx) {
            component.drawState(this, ctx);
          }
        }
        FlowNode.title = entry.title;
        FlowNode.desc = entry.description;
        LiteGraph.registerNodeType(entry.type, FlowNode);
      }
    },
    entryFor(type) {
      return this.catalogue.find((e) => e.type === type);
    },
    widgetValue(widget, value) {
      if (widget.type === "text" && value !== null && typeof value === "object") return JSON.stringify(value);
      if (widget.type === "text" && Array.isArray(value)) return JSON.stringify(value);
      return value ?? "";
    },
    addParamWidget(node, param) {
      const schema = param.schema;
      const set = (value) => {
        node.properties[param.name] = value;
        this.applyDynamicTypes(node);
      };
      const enumValues = schema.enum || (schema.anyOf || []).flatMap((s) => s.enum || []);
      const kind = param.type;
      if (enumValues.length) {
        node.addWidget("combo", param.name, node.properties[param.name], set, { values: enumValues });
      } else if (kind === "boolean") {
        node.addWidget("toggle", param.name, !!node.properties[param.name], set, {});
      } else if (kind === "integer" || kind === "number") {
        const bounds = schema.anyOf ? Object.assign({}, ...schema.anyOf) : schema;
        const opts = { precision: kind === "integer" ? 0 : 2, step2: kind === "integer" ? 1 : 0.1 };
        const small = Math.abs(param.default ?? 0);
        if (kind === "number" && small > 0 && small < 0.1) {
          // A learning rate of 2e-4 shows as 0.00020 (not 0.00) and steps by 1e-4.
          const magnitude = Math.floor(Math.log10(small));
          opts.precision = Math.min(10, 1 - magnitude);
          opts.step2 = 10 ** magnitude;
        }
        if (bounds.minimum !== undefined) opts.min = bounds.minimum;
        if (bounds.maximum !== undefined) opts.max = bounds.maximum;
        node.addWidget("number", param.name, node.properties[param.name] ?? 0, (v) => {
          set(kind === "integer" ? Math.round(v) : v);
        }, opts);
      } else if (["textarea", "file", "model", "credential", "json"].includes(schema.widget) || kind !== "text") {
        // Multi-line text, files and JSON values are edited in a dialog on the Python side.
        const w = node.addWidget("button", param.name, null, () => {
          this.$emit("edit_param", {
            node_id: node.id,
            name: param.name,
            type: kind,
            widget: schema.widget || (kind === "text" ? "text" : "json"),
            value: node.properties[param.name],
            description: param.description,
            task: schema.model_task || null,
          });
        }, {});
        w.label = `${param.name}: …`;
        Object.defineProperty(w, "label", {
          get: () => {
            const v = node.properties[param.name];
            const shown = typeof v === "string" ? v : JSON.stringify(v);
            return `${param.name}: ${(shown ?? "").slice(0, 28)}${(shown ?? "").length > 28 ? "…" : ""}`;
          },
          configurable: true,
        });
      } else {
        node.addWidget("text", param.name, node.properties[param.name] ?? "", set, {});
      }
    },
    applyDynamicTypes(node) {
      // Port types that depend on a parameter (an Input node's type, Load File's kind).
      const entry = this.entryFor(node.type);
      if (!entry || !entry.dynamic) return;
      for (const [param, byValue] of Object.entries(entry.dynamic)) {
        const overrides = byValue[String(node.properties[param])] || {};
        for (const [port, type] of Object.entries(overrides)) {
          const outIndex = node.findOutputSlot(port);
          if (outIndex >= 0 && node.outputs[outIndex].type !== type) {
            node.outputs[outIndex].type = type;
            node.outputs[outIndex].color_on = node.outputs[outIndex].color_off = typeColour(type);
            for (const linkId of [...(node.outputs[outIndex].links || [])]) {
              const link = this.lgraph.links.get ? this.lgraph.links.get(linkId) : this.lgraph.links[linkId];
              const target = link && this.lgraph.getNodeById(link.target_id);
              if (target && !LiteGraph.isValidConnection(type, target.inputs[link.target_slot].type)) {
                target.disconnectInput(link.target_slot);
              }
            }
          }
        }
      }
      node.setDirtyCanvas(true, true);
    },
    setProperty(nodeId, name, value) {
      const node = this.lgraph.getNodeById(nodeId);
      if (!node) return;
      node.properties[name] = value;
      const w = (node.widgets || []).find((x) => x.name === name);
      if (w && w.type !== "button") w.value = this.widgetValue(w, value);
      this.applyDynamicTypes(node);
      node.setDirtyCanvas(true, true);
    },

    // ---- graph in and out -------------------------------------------------------------
    loadGraph(data) {
      this.lgraph.configure(clone(data));
      for (const node of this.lgraph._nodes) this.applyDynamicTypes(node);
      this.lcanvas.setDirty(true, true);
      this.lastSaved = null;
    },
    serialize() {
      const data = this.lgraph.serialize();
      for (const node of data.nodes) {
        // Keep only what a graph file needs; widgets_values mirrors properties for LiteGraph.
        node.pos = Array.from(node.pos);
        node.size = Array.from(node.size);
      }
      return data;
    },
    serializeText() {
      return JSON.stringify(this.serialize());
    },
    checkChanged() {
      const text = this.serializeText();
      if (this.lastSaved === null) {
        this.lastSaved = this.lastEmitted = text;
        return;
      }
      if (text !== this.lastEmitted) {
        this.lastEmitted = text;
        if (text !== this.lastSaved) this.$emit("change", { graph: JSON.parse(text) });
      }
    },
    markSaved(graphText) {
      this.lastSaved = graphText ?? this.lastEmitted;
    },
    hasUnsavedChanges() {
      return this.serializeText() !== this.lastSaved;
    },
    addNode(type, canvasPos, properties) {
      const node = LiteGraph.createNode(type);
      if (!node) return null;
      node.pos = canvasPos ? [canvasPos[0], canvasPos[1]] : this.centre();
      for (const [k, v] of Object.entries(properties || {})) node.properties[k] = v;
      this.lgraph.add(node);
      node.onConfigure?.();
      this.lcanvas.setDirty(true, true);
      return node.id;
    },
    centre() {
      const rect = this.$refs.canvas.getBoundingClientRect();
      return this.lcanvas.convertOffsetToCanvas([rect.width / 2 - 100, rect.height / 2 - 40]);
    },

    // ---- run state, validation issues and previews -----------------------------------
    clearStates() {
      for (const node of this.lgraph._nodes) node.fbState = null;
      this.lcanvas.setDirty(true, true);
    },
    showIssues(issues) {
      this.clearStates();
      for (const issue of issues) {
        const node = this.lgraph.getNodeById(issue.node_id);
        if (node) {
          node.fbState = node.fbState || {};
          node.fbState.issues = [...(node.fbState.issues || []), issue.message];
        }
      }
      this.lcanvas.setDirty(true, true);
    },
    setStates(updates) {
      // updates: [{node_id, status, elapsed_s, fraction, message, error, outputs, metrics,
      //   curve, points, full}]. `points` (metrics that carry a loss) are appended to the
      // node's loss curve (`curve: null` clears it, as a new run does); `full` holds
      // outputs whose event summary was cut, sent whole once the run has ended.
      for (const u of updates) {
        const node = this.lgraph.getNodeById(u.node_id);
        if (!node) continue;
        const { points, full } = u;
        delete u.points;
        delete u.full;
        if (u.started) u.startedMs = Date.now();
        const s = (node.fbState = Object.assign(node.fbState || {}, u));
        if (points?.length) s.curve = [...(s.curve || []), ...points];
        if (full) s.outputs = Object.assign({}, s.outputs, full);
        if (u.outputs || points?.length || full || u.error) this.fitPreview(node);
      }
      this.lcanvas.setDirty(true, true);
    },
    curvePoints(node) {
      // The loss curve to draw: the live one from progress metrics, or the node's
      // `loss_curve` output when that has more points (a cached node has no live curve).
      const s = node.fbState;
      if (!s) return [];
      const live = curveFrom(s.curve || []);
      const final = curveFrom(s.outputs?.loss_curve);
      return final.length > live.length ? final : live;
    },
    fitPreview(node) {
      let blocks = this.layout(node);
      const wide = blocks.some((b) => ["curve", "lines", "image"].includes(b.kind));
      const tableWidth = Math.max(0, ...blocks.filter((b) => b.kind === "table").map((b) => b.width + 16));
      const width = Math.max(node.size[0], wide ? PREVIEW_WIDTH : 0, Math.min(tableWidth, TABLE_MAX_WIDTH));
      if (width !== node.size[0]) {
        node.size[0] = width;
        blocks = this.layout(node); // text wraps differently at the new width
      }
      const last = blocks[blocks.length - 1];
      if (last) node.size[1] = Math.max(node.size[1], last.y + last.h + 8);
    },
    previewRefs(node, kind) {
      const outputs = node.fbState?.outputs || {};
      return Object.values(outputs).filter((v) => v && typeof v === "object" && v.kind === kind && v.id);
    },
    previewTables(node) {
      // Text outputs holding a Markdown table, laid out for a monospace grid:
      // [{name, text, table, cols: [{x, w}], width, rows, height}], sizes in canvas units.
      const outputs = node.fbState?.outputs || {};
      const ctx = this.lcanvas.ctx;
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
    },
    previewLines(node) {
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
      const ctx = this.lcanvas.ctx;
      ctx.font = "12px sans-serif";
      const lines = [];
      for (const part of parts) {
        lines.push(...wrapText(ctx, part, node.size[0] - 16, PREVIEW_LINES));
        if (lines.length >= PREVIEW_LINES) break;
      }
      return lines.slice(0, PREVIEW_LINES);
    },
    imageFor(ref) {
      let img = this.images[ref.id];
      if (!img) {
        img = this.images[ref.id] = new Image();
        img.onload = () => this.lcanvas.setDirty(true, false);
        img.src = `/api/v1/artifacts/${ref.id}`;
      }
      return img;
    },
    previewTop(node) {
      const base = node.computeSize();
      return base[1] + 4;
    },
    layout(node) {
      // What is drawn under the widgets, top to bottom, in node coordinates:
      // [{kind: "message"|"curve"|"table"|"lines"|"image"|"audio", y, h, …}]. Drawing,
      // clicks and the node's size all use this one layout.
      const s = node.fbState;
      if (!s) return [];
      const blocks = [];
      let y = this.previewTop(node);
      const push = (block) => {
        block.y = y;
        blocks.push(block);
        y += block.h;
      };
      const ctx = this.lcanvas.ctx;
      ctx.font = "12px sans-serif";
      const messages = [...(s.issues || [])];
      if (s.error) messages.push(s.error);
      if (s.status === "running" && s.message) messages.push(s.message);
      for (const m of messages) {
        const lines = wrapText(ctx, m, node.size[0] - 16, 4);
        push({ kind: "message", lines, h: 14 * lines.length });
      }
      const points = this.curvePoints(node);
      if (points.length) push({ kind: "curve", points, h: CHART_BLOCK });
      for (const t of this.previewTables(node)) push({ kind: "table", ...t, h: t.height });
      const lines = this.previewLines(node);
      if (lines.length) push({ kind: "lines", lines, h: 14 * lines.length });
      for (const ref of this.previewRefs(node, "image")) push({ kind: "image", ref, h: 110 });
      for (const ref of this.previewRefs(node, "audio")) push({ kind: "audio", ref, h: 24 });
      return blocks;
    },
    drawState(node, ctx) {
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
      for (const b of this.layout(node)) {
        ctx.save();
        ctx.font = "12px sans-serif";
        ctx.textAlign = "left";
        if (b.kind === "message") {
          ctx.fillStyle = s.status === "running" ? "#ccc" : "#ff8a8a";
          b.lines.forEach((line, i) => ctx.fillText(line, 8, b.y + 12 + 14 * i));
        } else if (b.kind === "curve") {
          this.drawCurve(ctx, node, b);
        } else if (b.kind === "table") {
          this.drawTable(ctx, b);
        } else if (b.kind === "lines") {
          ctx.fillStyle = "#ddd";
          b.lines.forEach((line, i) => ctx.fillText(line, 8, b.y + 12 + 14 * i));
        } else if (b.kind === "image") {
          const img = this.imageFor(b.ref);
          if (img.complete && img.naturalWidth) {
            const h = 100;
            const iw = Math.min(w - 16, (img.naturalWidth / img.naturalHeight) * h);
            ctx.drawImage(img, 8, b.y + 4, iw, h);
          }
        } else if (b.kind === "audio") {
          const playing = this.audio && this.audio.fbId === b.ref.id && !this.audio.paused;
          ctx.fillStyle = "#2d5d8a";
          ctx.fillRect(8, b.y + 2, w - 16, 20);
          ctx.fillStyle = "#fff";
          ctx.fillText(`${playing ? "❚❚ pause" : "▶ play"}  ${b.ref.name || "audio"}`, 14, b.y + 16);
        }
        ctx.restore();
      }
    },
    drawCurve(ctx, node, b) {
      // A line chart of loss against step, with the latest loss (and, while running, the
      // time left) as a caption.
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
    },
    drawTable(ctx, b) {
      // A Markdown table as a monospace grid: bold header on a band, striped rows,
      // numbers right-aligned; lines around the table as plain text.
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
    },
    previewClick(node, pos) {
      if (!node.fbState?.outputs) return false;
      const b = this.layout(node).find((x) => pos[1] >= x.y && pos[1] < x.y + x.h);
      if (!b) return false;
      if (b.kind === "image") {
        this.$emit("open_image", { url: `/api/v1/artifacts/${b.ref.id}`, name: b.ref.name });
        return true;
      }
      if (b.kind === "table") {
        this.$emit("open_markdown", { name: b.name, text: b.text, title: node.title });
        return true;
      }
      if (b.kind === "audio") {
        this.toggleAudio(b.ref);
        return true;
      }
      return false;
    },
    toggleAudio(ref) {
      if (this.audio && this.audio.fbId === ref.id) {
        if (this.audio.paused) this.audio.play();
        else this.audio.pause();
      } else {
        this.audio?.pause();
        this.audio = new Audio(`/api/v1/artifacts/${ref.id}`);
        this.audio.fbId = ref.id;
        this.audio.onpause = this.audio.onplay = () => this.lcanvas.setDirty(true, false);
        this.audio.play();
      }
    },

    // ---- interactions -----------------------------------------------------------------
    resize() {
      const rect = this.$el.getBoundingClientRect();
      const canvas = this.$refs.canvas;
      if (!rect.width || !rect.height) return;
      canvas.width = rect.width;
      canvas.height = rect.height;
      this.lcanvas.resize?.(rect.width, rect.height);
      this.lcanvas.setDirty(true, true);
    },
    installDrop() {
      const el = this.$refs.canvas;
      el.addEventListener("dragover", (e) => {
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
      });
      el.addEventListener("drop", async (e) => {
        e.preventDefault();
        const pos = this.lcanvas.convertEventToCanvasOffset(e);
        const type = e.dataTransfer.getData("application/x-flowbuilder-node");
        if (type) {
          this.addNode(type, pos);
          return;
        }
        for (const file of e.dataTransfer.files) {
          await this.dropFile(file, pos);
          pos[1] += 160;
        }
      });
    },
    async dropFile(file, pos) {
      if (file.name.toLowerCase().endsWith(".json")) {
        this.$emit("open_graph", { name: file.name, text: await file.text() });
        return;
      }
      const body = new FormData();
      body.append("file", file, file.name);
      const response = await fetch("/api/v1/artifacts", { method: "POST", body });
      if (!response.ok) {
        this.$emit("notify", { message: `Upload of ${file.name} failed (${response.status})`, type: "negative" });
        return;
      }
      const ref = await response.json();
      const kind = ["audio", "image"].includes(ref.kind) ? ref.kind : ref.kind === "document" ? "text" : "file";
      // the answer names the artifact, not where the server keeps it: the page adds the node
      this.$emit("file_dropped", { id: ref.id, name: ref.name, kind, pos: [pos[0], pos[1]] });
    },
    installLinkRefusal() {
      // Tell the user why a link was refused, at the moment it is dropped.
      const connector = this.lcanvas.linkConnector;
      connector.events.addEventListener("after-drop-links", (e) => {
        const { renderLinks, event } = e.detail;
        const from = renderLinks?.[0];
        if (!from || !event) return;
        const node = this.lgraph.getNodeOnPos(event.canvasX, event.canvasY);
        if (!node || node === from.node) return;
        if (connector.state.connectingTo === "input") {
          const input = node.getInputOnPos([event.canvasX, event.canvasY]);
          if (input && !LiteGraph.isValidConnection(from.fromSlot.type, input.type)) {
            this.$emit("link_refused", {
              from_type: from.fromSlot.type,
              to_type: input.type,
              to_node: node.id,
              to_input: input.name,
            });
          }
        }
      });
    },
    installTooltips() {
      const el = this.$refs.canvas;
      el.addEventListener("mousemove", (e) => {
        const pos = this.lcanvas.convertEventToCanvasOffset(e);
        const node = this.lgraph.getNodeOnPos(pos[0], pos[1]);
        const entry = node && this.entryFor(node.type);
        const tip = entry ? `${entry.title} (${entry.type} ${entry.version})\n${entry.description}` : "";
        if (el.title !== tip) el.title = tip;
      });
    },

    // ---- helpers for tests: where things are on screen --------------------------------
    slotScreenPos(nodeId, isInput, slot) {
      const node = this.lgraph.getNodeById(nodeId);
      const p = node.getConnectionPos(isInput, slot);
      const c = this.lcanvas.ds.convertOffsetToCanvas(p);
      const rect = this.$refs.canvas.getBoundingClientRect();
      return [rect.left + c[0], rect.top + c[1]];
    },
    nodeScreenRect(nodeId) {
      const node = this.lgraph.getNodeById(nodeId);
      const tl = this.lcanvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
      const rect = this.$refs.canvas.getBoundingClientRect();
      const s = this.lcanvas.ds.scale;
      return [rect.left + tl[0], rect.top + tl[1], node.size[0] * s, node.size[1] * s];
    },
    widgetScreenPos(nodeId, name) {
      const node = this.lgraph.getNodeById(nodeId);
      const w = node.widgets.find((x) => x.name === name);
      const y = node.pos[1] + (w.last_y ?? w.y ?? 0) + LiteGraph.NODE_WIDGET_HEIGHT / 2;
      const c = this.lcanvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, y]);
      const rect = this.$refs.canvas.getBoundingClientRect();
      return [rect.left + c[0], rect.top + c[1]];
    },
    nodeIds() {
      return this.lgraph._nodes.map((n) => ({ id: n.id, type: n.type, state: n.fbState }));
    },
  },
};
