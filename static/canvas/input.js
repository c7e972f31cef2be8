// What the user does on the canvas besides LiteGraph's own editing: dropping palette
// items and files on it, hearing why a link was refused, and a tooltip naming each node.
// emit(name, args) sends an event to the Python side.

import { LiteGraph } from "litegraph/litegraph.es.js";

export function installDrop(el, lcanvas, { addNode, emit }) {
  // A palette item adds its node where it is dropped; files go below one another.
  el.addEventListener("dragover", (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  el.addEventListener("drop", async (e) => {
    e.preventDefault();
    const pos = lcanvas.convertEventToCanvasOffset(e);
    const type = e.dataTransfer.getData("application/x-flowbuilder-node");
    if (type) {
      addNode(type, pos);
      return;
    }
    for (const file of e.dataTransfer.files) {
      await dropFile(file, pos, emit);
      pos[1] += 160;
    }
  });
}

async function dropFile(file, pos, emit) {
  // A graph file opens ("open_graph"); any other file is uploaded as an artifact and the
  // page adds a Load File node for it ("file_dropped").
  if (file.name.toLowerCase().endsWith(".json")) {
    emit("open_graph", { name: file.name, text: await file.text() });
    return;
  }
  const body = new FormData();
  body.append("file", file, file.name);
  const response = await fetch("/api/v1/artifacts", { method: "POST", body });
  if (!response.ok) {
    emit("notify", { message: `Upload of ${file.name} failed (${response.status})`, type: "negative" });
    return;
  }
  const ref = await response.json();
  const kind = ["audio", "image"].includes(ref.kind) ? ref.kind : ref.kind === "document" ? "text" : "file";
  // the answer names the artifact, not where the server keeps it: the page adds the node
  emit("file_dropped", { id: ref.id, name: ref.name, kind, pos: [pos[0], pos[1]] });
}

export function installLinkRefusal(lcanvas, lgraph, emit) {
  // Tell the user why a link was refused, at the moment it is dropped ("link_refused").
  const connector = lcanvas.linkConnector;
  connector.events.addEventListener("after-drop-links", (e) => {
    const { renderLinks, event } = e.detail;
    const from = renderLinks?.[0];
    if (!from || !event) return;
    const node = lgraph.getNodeOnPos(event.canvasX, event.canvasY);
    if (!node || node === from.node) return;
    if (connector.state.connectingTo === "input") {
      const input = node.getInputOnPos([event.canvasX, event.canvasY]);
      if (input && !LiteGraph.isValidConnection(from.fromSlot.type, input.type)) {
        emit("link_refused", {
          from_type: from.fromSlot.type,
          to_type: input.type,
          to_node: node.id,
          to_input: input.name,
        });
      }
    }
  });
}

export function installTooltips(el, lcanvas, lgraph, entryFor) {
  // The canvas's title names the node under the mouse: title, type id, version, description.
  el.addEventListener("mousemove", (e) => {
    const pos = lcanvas.convertEventToCanvasOffset(e);
    const node = lgraph.getNodeOnPos(pos[0], pos[1]);
    const entry = node && entryFor(node.type);
    const tip = entry ? `${entry.title} (${entry.type} ${entry.version})\n${entry.description}` : "";
    if (el.title !== tip) el.title = tip;
  });
}
