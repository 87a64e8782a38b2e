// charpack: one upload button per image-upload combo of a charpack node.
//
// The frontend (1.32.9, extension "Comfy.UploadImage") gives a node a single upload button, for
// the FIRST *required* combo marked image_upload; the Character node's optional face_image_2
// got none. This adds a button "upload_<input>" for every other such combo. It is a plain
// button, not a second copy of the frontend's IMAGEUPLOAD widget: that one would also take over
// the node's drag-and-drop and paste (the last one wins) and preview "None" (a 404). The file
// goes to ComfyUI's input folder through POST /upload/image, as the frontend's own button does;
// the button is kept out of the saved workflow's widgets_values and of the queued prompt.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

function isUploadCombo(spec) {
  const [type, options] = spec ?? [];
  return !!options?.image_upload && (Array.isArray(type) || type === "COMBO");
}

function chooseFile(accept) {
  return new Promise((resolve) => {
    const input = document.createElement("input");
    input.type = "file";
    input.accept = accept;
    input.style.display = "none";
    input.onchange = () => {
      resolve(input.files?.[0] ?? null);
      input.remove();
    };
    document.body.append(input);
    input.click();
  });
}

async function upload(file, folder) {
  const body = new FormData();
  body.append("image", file);
  body.append("type", folder);
  const answer = await api.fetchApi("/upload/image", { method: "POST", body });
  if (answer.status !== 200) throw new Error(`${answer.status} ${answer.statusText}`);
  const { name, subfolder } = await answer.json();
  return subfolder ? `${subfolder}/${name}` : name;
}

function addUploadButton(node, name, options) {
  const combo = node.widgets?.find((w) => w.name === name);
  if (!combo) return;
  const button = node.addWidget(
    "button",
    `upload_${name}`,
    "image",
    async () => {
      const file = await chooseFile("image/png,image/jpeg,image/webp");
      if (!file) return;
      try {
        const value = await upload(file, options.image_folder ?? "input");
        const values = combo.options?.values;
        if (Array.isArray(values) && !values.includes(value)) values.push(value);
        combo.value = value;
        combo.callback?.(value);
        node.setDirtyCanvas?.(true, true);
      } catch (error) {
        console.error(`charpack: uploading ${file.name} for ${name} failed: ${error}`);
      }
    },
    { serialize: false },
  );
  button.label = `choose ${name} to upload`;
  button.serialize = false;
}

app.registerExtension({
  name: "charpack.uploads",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("Charpack")) return;
    const required = nodeData.input?.required ?? {};
    const optional = nodeData.input?.optional ?? {};
    // The combo the frontend's own button serves (its rule: the first required one).
    const served = Object.entries(required).find(([, spec]) => isUploadCombo(spec))?.[0];
    const extra = Object.entries({ ...required, ...optional }).filter(
      ([name, spec]) => name !== served && isUploadCombo(spec),
    );
    if (!extra.length) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      // Two buttons: each says which input it fills (the frontend's says "choose file").
      const own = this.widgets?.find((w) => w.name === "upload" && w.type === "button");
      if (own && served) own.label = `choose ${served} to upload`;
      for (const [name, spec] of extra) addUploadButton(this, name, spec[1]);
      return result;
    };
  },
});
