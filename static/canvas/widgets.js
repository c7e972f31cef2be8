// A node's parameter widgets, from each parameter's JSON Schema: a combo, toggle, number
// or text widget, or a button that opens the Python side's editor (multi-line text,
// files, models, credentials, JSON). Values live by name in node.properties; the widgets
// only show them (widgets_values is never read).

export function widgetValue(widget, value) {
  // What a widget shows for a property value.
  if (widget.type === "text" && value !== null && typeof value === "object") return JSON.stringify(value);
  if (widget.type === "text" && Array.isArray(value)) return JSON.stringify(value);
  return value ?? "";
}

export function showProperties(node) {
  for (const w of node.widgets || []) {
    if (w.name in node.properties) w.value = widgetValue(w, node.properties[w.name]);
  }
}

export function setProperty(node, name, value) {
  node.properties[name] = value;
  const w = (node.widgets || []).find((x) => x.name === name);
  if (w && w.type !== "button") w.value = widgetValue(w, value);
}

export function addParamWidget(node, param, { changed, edit }) {
  // param: a catalogue entry's {name, type, schema, default, description}. changed(node)
  // follows every edit; edit({node_id, name, type, widget, value, description, task})
  // asks the Python side to edit a value the canvas cannot.
  const schema = param.schema;
  const set = (value) => {
    node.properties[param.name] = value;
    changed(node);
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
      edit({
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
}
