// LiteGraph builds its context menus (titles and entries), its node panel and its
// dialogs (editing a property) with innerHTML, from strings a graph file carries: node
// types (an unknown one too), property names, slot types. A graph may be someone else's,
// so those strings are made inert here: menus and panels keep only the markup LiteGraph
// itself uses (spans and headings with a class), dialogs their form fields, and what a
// callback receives is left untouched.

import DOMPurify from "dompurify";
import { ContextMenu, LGraphCanvas, LiteGraph } from "litegraph/litegraph.es.js";

const LITEGRAPH_MARKUP = { ALLOWED_TAGS: ["span", "h3"], ALLOWED_ATTR: ["class"] };

const DIALOG_MARKUP = { ADD_ATTR: ["autofocus"] }; // DOMPurify's defaults keep form fields

export function inert(html, config = LITEGRAPH_MARKUP) {
  return typeof html === "string" ? DOMPurify.sanitize(html, config) : html;
}

class InertContextMenu extends ContextMenu {
  constructor(values, options) {
    if (options && typeof options.title === "string") options.title = inert(options.title);
    super(values, options);
  }

  addItem(name, value, options) {
    if (value && typeof value === "object" && typeof value.title === "string") {
      value.title = inert(value.title); // shown instead of the name; display only
    }
    return super.addItem(inert(name), value, options);
  }
}

let installed = false;

export function installInertMarkup() {
  if (installed) return;
  installed = true;
  LiteGraph.ContextMenu = InertContextMenu;
  const createPanel = LGraphCanvas.prototype.createPanel;
  LGraphCanvas.prototype.createPanel = function (...args) {
    const panel = createPanel.apply(this, args);
    const addHTML = panel.addHTML;
    panel.addHTML = (code, ...rest) => addHTML.call(panel, inert(String(code)), ...rest);
    return panel;
  };
  const createDialog = LGraphCanvas.prototype.createDialog;
  LGraphCanvas.prototype.createDialog = function (html, ...rest) {
    return createDialog.call(this, inert(html, DIALOG_MARKUP), ...rest);
  };
}
