// Where things are on screen, in page pixels, for tests and the browser console:
// a node's slots, its rectangle and its widgets.

import { LiteGraph } from "litegraph/litegraph.es.js";

function toPage(lcanvas, el, canvasPos) {
  const c = lcanvas.ds.convertOffsetToCanvas(canvasPos);
  const rect = el.getBoundingClientRect();
  return [rect.left + c[0], rect.top + c[1]];
}

export function slotScreenPos(lcanvas, el, node, isInput, slot) {
  return toPage(lcanvas, el, node.getConnectionPos(isInput, slot));
}

export function nodeScreenRect(lcanvas, el, node) {
  // [left, top, width, height] of the node's body (its title bar is above it).
  const [left, top] = toPage(lcanvas, el, [node.pos[0], node.pos[1]]);
  const s = lcanvas.ds.scale;
  return [left, top, node.size[0] * s, node.size[1] * s];
}

export function widgetScreenPos(lcanvas, el, node, name) {
  // The middle of the named widget.
  const w = node.widgets.find((x) => x.name === name);
  const y = node.pos[1] + (w.last_y ?? w.y ?? 0) + LiteGraph.NODE_WIDGET_HEIGHT / 2;
  return toPage(lcanvas, el, [node.pos[0] + node.size[0] / 2, y]);
}
