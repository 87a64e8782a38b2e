// charpack: one upload button per image-upload combo of a charpack node.
//
// The frontend (1.32.9, extension "Comfy.UploadImage") gives a node a single upload button, for
// the FIRST *required* combo marked image_upload; the Character node's optional face_image_2
// got none. This adds the same IMAGEUPLOAD widget the frontend builds for the others, named
// "upload_<input>", kept out of the saved workflow's widgets_values (it is a button).
import { app } from "../../scripts/app.js";

const NONE = "None"; // charpack's "no file" choice (ops/specs.py NONE_CHOICE)

function isUploadCombo(spec) {
  const [type, options] = spec ?? [];
  return !!options?.image_upload && (Array.isArray(type) || type === "COMBO");
}

app.registerExtension({
  name: "charpack.uploads",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("Charpack")) return;
    const required = (nodeData.input ??= {}).required ?? {};
    const optional = nodeData.input.optional ?? {};
    // The combo the frontend's own extension serves (its rule: the first required one).
    const served = Object.entries(required).find(([, spec]) => isUploadCombo(spec))?.[0];
    const extra = Object.entries({ ...required, ...optional })
      .filter(([name, spec]) => name !== served && isUploadCombo(spec))
      .map(([name]) => name);
    if (!extra.length) return;
    for (const name of extra) {
      const spec = required[name] ?? optional[name];
      required[`upload_${name}`] = ["IMAGEUPLOAD", { ...spec[1], imageInputName: name }];
    }
    nodeData.input.required = required;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const widget = (name) => this.widgets?.find((w) => w.name === name);
      const main = widget(served);
      for (const name of extra) {
        const button = widget(`upload_${name}`);
        if (button) button.serialize = false;
        // "None" in an optional face combo must not replace the first face's preview.
        const combo = widget(name);
        if (!combo || !main) continue;
        const show = combo.callback;
        combo.callback = function () {
          if (combo.value === NONE) return main.callback?.(main.value);
          return show?.apply(this, arguments);
        };
        requestAnimationFrame(() => {
          if (combo.value === NONE) main.callback?.(main.value);
        });
      }
      return result;
    };
  },
});
