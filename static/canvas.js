// The flowbuilder canvas: a LiteGraph editor wrapped as a NiceGUI (Vue) component.
//
// Everything about node types comes from the registry's catalogue (props.catalogue) and
// the port-type compatibility table (props.compat), both computed in Python: nothing is
// hand-listed here. The graph this component saves is LiteGraph's own serialisation,
// with every parameter kept by name in node.properties, so the CLI runs it unchanged.

import { LGraph, LGraphCanvas, LGraphNode, LiteGraph } from "litegraph/litegraph.es.js";

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
    for (const word of para.split(" ")) {
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
      // updates: [{node_id, status, elapsed_s, fraction, message, error, outputs}]
      for (const u of updates) {
        const node = this.lgraph.getNodeById(u.node_id);
        if (!node) continue;
        if (u.started) u.startedMs = Date.now();
        node.fbState = Object.assign(node.fbState || {}, u);
        if (u.outputs) this.fitPreview(node);
      }
      this.lcanvas.setDirty(true, true);
    },
    fitPreview(node) {
      const lines = this.previewLines(node).length;
      const images = this.previewRefs(node, "image").length;
      const audios = this.previewRefs(node, "audio").length;
      const extra = 14 * lines + (images ? 110 : 0) + 24 * audios + 12;
      const base = node.computeSize();
      node.size[0] = Math.max(node.size[0], images || lines ? PREVIEW_WIDTH : node.size[0]);
      node.size[1] = Math.max(base[1] + extra, node.size[1]);
    },
    previewRefs(node, kind) {
      const outputs = node.fbState?.outputs || {};
      return Object.values(outputs).filter((v) => v && typeof v === "object" && v.kind === kind && v.id);
    },
    previewLines(node) {
      const outputs = node.fbState?.outputs;
      if (!outputs) return [];
      const parts = [];
      for (const [name, value] of Object.entries(outputs)) {
        if (value && typeof value === "object" && value.id && value.kind) {
          if (value.kind !== "image" && value.kind !== "audio") parts.push(`${name}: ${value.name || value.kind}`);
          continue;
        }
        if (name === "usage") continue;
        const shown = typeof value === "string" ? value : JSON.stringify(value);
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
      let y = this.previewTop(node);
      ctx.font = "12px sans-serif";
      const messages = [...(s.issues || [])];
      if (s.error) messages.push(s.error);
      if (s.status === "running" && s.message) messages.push(s.message);
      for (const m of messages) {
        ctx.fillStyle = s.status === "running" ? "#ccc" : "#ff8a8a";
        for (const line of wrapText(ctx, m, w - 16, 4)) {
          ctx.fillText(line, 8, y + 12);
          y += 14;
        }
      }
      for (const line of this.previewLines(node)) {
        ctx.fillStyle = "#ddd";
        ctx.fillText(line, 8, y + 12);
        y += 14;
      }
      for (const ref of this.previewRefs(node, "image")) {
        const img = this.imageFor(ref);
        if (img.complete && img.naturalWidth) {
          const h = 100;
          const iw = Math.min(w - 16, (img.naturalWidth / img.naturalHeight) * h);
          ctx.drawImage(img, 8, y + 4, iw, h);
        }
        y += 110;
      }
      for (const ref of this.previewRefs(node, "audio")) {
        const playing = this.audio && this.audio.fbId === ref.id && !this.audio.paused;
        ctx.fillStyle = "#2d5d8a";
        ctx.fillRect(8, y + 2, w - 16, 20);
        ctx.fillStyle = "#fff";
        ctx.fillText(`${playing ? "❚❚ pause" : "▶ play"}  ${ref.name || "audio"}`, 14, y + 16);
        y += 24;
      }
    },
    previewClick(node, pos) {
      const s = node.fbState;
      if (!s?.outputs) return false;
      let y = this.previewTop(node) + 14 * this.previewLines(node).length;
      y += 14 * ((s.issues || []).length + (s.error ? 1 : 0));
      for (const ref of this.previewRefs(node, "image")) {
        if (pos[1] >= y && pos[1] < y + 110) {
          this.$emit("open_image", { url: `/api/v1/artifacts/${ref.id}`, name: ref.name });
          return true;
        }
        y += 110;
      }
      for (const ref of this.previewRefs(node, "audio")) {
        if (pos[1] >= y && pos[1] < y + 24) {
          this.toggleAudio(ref);
          return true;
        }
        y += 24;
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
      this.addNode("core/load_file", pos, { path: ref.path, kind });
      this.$emit("notify", { message: `Added ${file.name} as a Load File node (${kind})`, type: "positive" });
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
