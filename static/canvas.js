// The flowbuilder canvas: a LiteGraph editor wrapped as a NiceGUI (Vue) component. This
// shell owns the graph and its canvas, the methods Python calls (server/components/
// canvas.py), the events it sends back, and the timers; the rest is in static/canvas/
// (served as the ES modules "fb-canvas/…"), each file saying what it owns.
//
// Everything about node types comes from the registry's catalogue (props.catalogue) and
// the port-type compatibility table (props.compat), both computed in Python: nothing is
// hand-listed here. The graph this component saves is LiteGraph's own serialisation,
// with every parameter kept by name in node.properties, so the CLI runs it unchanged.

import { LGraph, LGraphCanvas, LiteGraph } from "litegraph/litegraph.es.js";
import { installInertMarkup } from "fb-menus/inert.js";
import { Changes, serialize } from "fb-canvas/changes.js";
import { curvePoints } from "fb-canvas/chart.js";
import { drawState } from "fb-canvas/draw.js";
import { clone } from "fb-canvas/format.js";
import { installDrop, installLinkRefusal, installTooltips } from "fb-canvas/input.js";
import * as previews from "fb-canvas/layout.js";
import { artifactUrl, imageFor, isPlaying, toggleAudio } from "fb-canvas/media.js";
import * as screen from "fb-canvas/screen.js";
import * as states from "fb-canvas/states.js";
import { previewTables } from "fb-canvas/table.js";
import { previewLines } from "fb-canvas/text.js";
import * as types from "fb-canvas/types.js";
import * as widgets from "fb-canvas/widgets.js";

installInertMarkup(); // a graph's strings never become markup in LiteGraph's menus

function loadCss(href) {
  if (document.querySelector(`link[data-fb="${href}"]`)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  link.dataset.fb = href;
  document.head.append(link);
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
    this.images = {}; // artifact id → <img> of its thumbnail
    this.audio = null; // the audio preview playing or paused
    this.registerTypes();
    this.lgraph = new LGraph();
    this.lcanvas = new LGraphCanvas(this.$refs.canvas, this.lgraph);
    this.lcanvas.allow_searchbox = true;
    this.lcanvas.show_info = false;
    const redraw = () => this.lcanvas.setDirty(true, false);
    this.media = {
      image: (ref) => imageFor(this.images, ref, redraw),
      playing: (ref) => isPlaying(this.audio, ref),
      toggle: (ref) => (this.audio = toggleAudio(this.audio, ref, redraw)),
    };
    this.changes = new Changes(this.lgraph);
    const el = this.$refs.canvas;
    const emit = (name, args) => this.$emit(name, args);
    installDrop(el, this.lcanvas, { addNode: (type, pos) => this.addNode(type, pos), emit });
    installLinkRefusal(this.lcanvas, this.lgraph, emit);
    installTooltips(el, this.lcanvas, this.lgraph, (type) => this.entryFor(type));
    this.resize();
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(this.$el);
    if (this.graph) this.loadGraph(this.graph);
    this.changes.reset(); // taken at the first poll, once LiteGraph has laid nodes out
    this.poll = setInterval(() => this.checkChanged(), 400);
    window.addEventListener("beforeunload", (e) => {
      if (this.changes.wouldLoseEdits()) {
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
      types.installLinkRule(this.compat);
      types.registerTypes(this.catalogue, {
        addParam: (node, param) =>
          widgets.addParamWidget(node, param, {
            changed: (n) => this.applyDynamicTypes(n),
            edit: (args) => this.$emit("edit_param", args),
          }),
        configure: (node) => {
          widgets.showProperties(node);
          this.applyDynamicTypes(node);
        },
        draw: (node, ctx) => drawState(ctx, node, () => this.layout(node), this.media),
        click: (node, pos) => this.previewClick(node, pos),
      });
    },
    entryFor(type) {
      return this.catalogue.find((e) => e.type === type);
    },
    applyDynamicTypes(node) {
      types.applyDynamicTypes(this.lgraph, this.entryFor(node.type), node);
    },
    setProperty(nodeId, name, value) {
      const node = this.lgraph.getNodeById(nodeId);
      if (!node) return;
      widgets.setProperty(node, name, value);
      this.applyDynamicTypes(node);
      node.setDirtyCanvas(true, true);
    },

    // ---- graph in and out -------------------------------------------------------------
    loadGraph(data) {
      this.lgraph.configure(clone(data));
      for (const node of this.lgraph._nodes) this.applyDynamicTypes(node);
      this.lcanvas.setDirty(true, true);
      this.changes.reset();
    },
    serialize() {
      return serialize(this.lgraph);
    },
    checkChanged() {
      const graph = this.changes.poll();
      if (graph) this.$emit("change", { graph });
    },
    markSaved(graphText) {
      this.changes.markSaved(graphText);
    },
    hasUnsavedChanges() {
      return this.changes.unsaved();
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
      states.clearStates(this.lgraph);
      this.lcanvas.setDirty(true, true);
    },
    showIssues(issues) {
      states.showIssues(this.lgraph, issues);
      this.lcanvas.setDirty(true, true);
    },
    setStates(updates) {
      states.setStates(this.lgraph, updates, (node) => previews.fitPreview(node, this.lcanvas.ctx));
      this.lcanvas.setDirty(true, true);
    },
    layout(node) {
      return previews.layout(node, this.lcanvas.ctx);
    },
    curvePoints(node) {
      return curvePoints(node);
    },
    previewTables(node) {
      return previewTables(node, this.lcanvas.ctx);
    },
    previewLines(node) {
      return previewLines(node, this.lcanvas.ctx);
    },
    previewClick(node, pos) {
      // A click on a preview: an image enlarges, a table opens whole, audio plays or pauses.
      if (!node.fbState?.outputs) return false;
      const b = previews.blockAt(this.layout(node), pos);
      if (!b) return false;
      if (b.kind === "image") {
        this.$emit("open_image", { url: artifactUrl(b.ref), name: b.ref.name });
        return true;
      }
      if (b.kind === "table") {
        this.$emit("open_markdown", { name: b.name, text: b.text, title: node.title });
        return true;
      }
      if (b.kind === "audio") {
        this.media.toggle(b.ref);
        return true;
      }
      return false;
    },

    // ---- the canvas's size --------------------------------------------------------------
    resize() {
      const rect = this.$el.getBoundingClientRect();
      const canvas = this.$refs.canvas;
      if (!rect.width || !rect.height) return;
      canvas.width = rect.width;
      canvas.height = rect.height;
      this.lcanvas.resize?.(rect.width, rect.height);
      this.lcanvas.setDirty(true, true);
    },

    // ---- helpers for tests: where things are on screen --------------------------------
    slotScreenPos(nodeId, isInput, slot) {
      return screen.slotScreenPos(this.lcanvas, this.$refs.canvas, this.lgraph.getNodeById(nodeId), isInput, slot);
    },
    nodeScreenRect(nodeId) {
      return screen.nodeScreenRect(this.lcanvas, this.$refs.canvas, this.lgraph.getNodeById(nodeId));
    },
    widgetScreenPos(nodeId, name) {
      return screen.widgetScreenPos(this.lcanvas, this.$refs.canvas, this.lgraph.getNodeById(nodeId), name);
    },
    nodeIds() {
      return this.lgraph._nodes.map((n) => ({ id: n.id, type: n.type, state: n.fbState }));
    },
  },
};
