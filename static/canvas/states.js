// Run state on the nodes (node.fbState): the validation issues of a graph, and the
// status, progress, outputs and loss points of a run's events as the Python side sends them.

export function clearStates(graph) {
  for (const node of graph._nodes) node.fbState = null;
}

export function showIssues(graph, issues) {
  // issues: [{node_id, message}]; every node's earlier state is cleared first.
  clearStates(graph);
  for (const issue of issues) {
    const node = graph.getNodeById(issue.node_id);
    if (node) {
      node.fbState = node.fbState || {};
      node.fbState.issues = [...(node.fbState.issues || []), issue.message];
    }
  }
}

export function setStates(graph, updates, fit) {
  // updates: [{node_id, status, elapsed_s, fraction, message, error, outputs, metrics,
  //   curve, points, full}]. `points` (metrics that carry a loss) are appended to the
  // node's loss curve (`curve: null` clears it, as a new run does); `full` holds
  // outputs whose event summary was cut, sent whole once the run has ended.
  // fit(node) follows an update that changes what the node previews.
  for (const u of updates) {
    const node = graph.getNodeById(u.node_id);
    if (!node) continue;
    const { points, full } = u;
    delete u.points;
    delete u.full;
    if (u.started) u.startedMs = Date.now();
    const s = (node.fbState = Object.assign(node.fbState || {}, u));
    if (points?.length) s.curve = [...(s.curve || []), ...points];
    if (full) s.outputs = Object.assign({}, s.outputs, full);
    if (u.outputs || points?.length || full || u.error) fit(node);
  }
}
