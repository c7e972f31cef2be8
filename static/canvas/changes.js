// The graph in and out: LiteGraph's own serialisation is the graph file (parameters by
// name in each node's properties), and Changes tells what has changed since the last save.

export function serialize(graph) {
  const data = graph.serialize();
  for (const node of data.nodes) {
    // Keep only what a graph file needs; widgets_values mirrors properties for LiteGraph.
    node.pos = Array.from(node.pos);
    node.size = Array.from(node.size);
  }
  return data;
}

export class Changes {
  // The graph's text as last saved and as last reported. The first poll after a load
  // takes the graph as saved, once LiteGraph has laid its nodes out.
  constructor(graph) {
    this.graph = graph;
    this.saved = null;
    this.emitted = null;
  }

  text() {
    return JSON.stringify(serialize(this.graph));
  }

  reset() {
    this.saved = null;
  }

  poll() {
    // The graph when it changed since the last poll and differs from the saved one, else null.
    const text = this.text();
    if (this.saved === null) {
      this.saved = this.emitted = text;
      return null;
    }
    if (text === this.emitted) return null;
    this.emitted = text;
    return text !== this.saved ? JSON.parse(text) : null;
  }

  markSaved(text) {
    // text: the graph as saved (JSON); by default, the one last reported.
    this.saved = text ?? this.emitted;
  }

  unsaved() {
    // Whether the graph differs from the saved one (always, before the first poll).
    return this.text() !== this.saved;
  }

  wouldLoseEdits() {
    // Whether leaving the page now would lose edits.
    return this.saved !== null && this.unsaved();
  }
}
