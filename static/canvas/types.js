// Node types from the registry's catalogue: one LiteGraph class per entry, the link rule
// from the engine's compatibility table (props.compat), a colour per port type, and port
// types that follow a parameter. Nothing here is hand-listed: it all comes from Python.

import { LGraphCanvas, LGraphNode, LiteGraph } from "litegraph/litegraph.es.js";
import { clone } from "./format.js";

export function typeColour(type) {
  // A stable colour per port type (hue from a string hash).
  let h = 0;
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 60%, 60%)`;
}

export function installLinkRule(compat) {
  // compat: {types: [type], allowed: {source: [target]}}, from flowbuilder.types.compatible.
  LiteGraph.isValidConnection = (a, b) => {
    if (!a || !b || a === "*" || b === "*") return true;
    if (a === b || b === "any" || a === "any") return true;
    return (compat.allowed[a] || []).includes(b);
  };
  for (const type of compat.types) {
    LGraphCanvas.link_type_colors[type] = typeColour(type);
  }
}

export function registerTypes(catalogue, hooks) {
  // One LiteGraph node class per catalogue entry. hooks, called with the node:
  // addParam(node, param) for each visible parameter, configure(node) once its properties
  // are loaded, draw(node, ctx) over it, click(node, pos) → true when a preview took it.
  for (const entry of catalogue) {
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
          hooks.addParam(this, param);
        }
        this.serialize_widgets = true;
        this.fbState = null;
        // LGraphNode sets its own onMouseDown (title buttons) on the instance, which
        // would shadow a method here: chain it, previews first.
        const base = this.onMouseDown;
        this.onMouseDown = (e, pos, canvas) => hooks.click(this, pos) || !!base?.(e, pos, canvas);
        this.size = this.computeSize();
        this.size[0] = Math.max(this.size[0], 220);
      }
      onConfigure() {
        hooks.configure(this);
      }
      onDrawForeground(ctx) {
        hooks.draw(this, ctx);
      }
    }
    FlowNode.title = entry.title;
    FlowNode.desc = entry.description;
    LiteGraph.registerNodeType(entry.type, FlowNode);
  }
}

export function applyDynamicTypes(graph, entry, node) {
  // Port types that depend on a parameter (an Input node's type, Load File's kind):
  // entry.dynamic is {param: {value: {port: type}}}. Links the new type cannot carry go.
  if (!entry || !entry.dynamic) return;
  for (const [param, byValue] of Object.entries(entry.dynamic)) {
    const overrides = byValue[String(node.properties[param])] || {};
    for (const [port, type] of Object.entries(overrides)) {
      const outIndex = node.findOutputSlot(port);
      if (outIndex >= 0 && node.outputs[outIndex].type !== type) {
        node.outputs[outIndex].type = type;
        node.outputs[outIndex].color_on = node.outputs[outIndex].color_off = typeColour(type);
        for (const linkId of [...(node.outputs[outIndex].links || [])]) {
          const link = graph.links.get ? graph.links.get(linkId) : graph.links[linkId];
          const target = link && graph.getNodeById(link.target_id);
          if (target && !LiteGraph.isValidConnection(type, target.inputs[link.target_slot].type)) {
            target.disconnectInput(link.target_slot);
          }
        }
      }
    }
  }
  node.setDirtyCanvas(true, true);
}
