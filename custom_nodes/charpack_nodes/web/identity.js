// charpack: the identity score and the identity gate show their result on the node.
//
// Both nodes put the lines to show under "text" in their UI output (nodes_identity.py
// score_text, nodes_gate.py gate_text); this shows them in a read-only box, widget
// "charpack_result", kept out of the saved workflow and of the queued prompt.
import { app } from "../../scripts/app.js";

const NODES = ["CharpackIdentityScore", "CharpackIdentityGate"];
const WIDGET = "charpack_result";

function resultWidget(node) {
  const existing = node.widgets?.find((w) => w.name === WIDGET);
  if (existing) return existing;
  const box = document.createElement("textarea");
  box.readOnly = true;
  box.className = "comfy-multiline-input charpack-result";
  box.rows = 2;
  const widget = node.addDOMWidget(WIDGET, "charpack_result", box, {
    getValue: () => box.value,
    setValue: (v) => {
      box.value = v;
    },
    serialize: false,
  });
  widget.serialize = false;
  return widget;
}

app.registerExtension({
  name: "charpack.identity",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.includes(nodeData?.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      const lines = output?.text;
      if (Array.isArray(lines)) {
        resultWidget(this).value = lines.join("\n");
        this.setDirtyCanvas?.(true, true);
      }
      return result;
    };
  },
});
