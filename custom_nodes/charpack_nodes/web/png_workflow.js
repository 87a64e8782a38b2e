// charpack: a pack picture dropped or opened in the editor brings back the graph that made it.
//
// Save pack writes the A1111-style "parameters" text chunk (what image hosts read) beside
// ComfyUI's "workflow" chunk. Frontend 1.32.9's app.handleFile looks at "parameters" FIRST and,
// when present, imports the picture as an A1111 generation (a stock SD graph) instead of loading
// the workflow it carries. For a picture whose workflow holds a Save pack node, this loads that
// workflow, exactly as handleFile does for a PNG without "parameters"; every other file is left
// to the frontend.
import { app } from "../../scripts/app.js";

const SAVER = "CharpackSavePack";

async function packWorkflow(file) {
  if (file?.type !== "image/png") return null;
  const read = window.comfyAPI?.pnginfo?.getPngMetadata;
  if (!read) return null;
  const info = await read(file);
  if (!info?.workflow || !info?.parameters) return null;
  try {
    const workflow = JSON.parse(info.workflow);
    return workflow?.nodes?.some((n) => n?.type === SAVER) ? workflow : null;
  } catch {
    return null;
  }
}

app.registerExtension({
  name: "charpack.pngWorkflow",
  setup() {
    const original = app.handleFile.bind(app);
    app.handleFile = async function (file, openSource) {
      const workflow = await packWorkflow(file);
      if (!workflow) return original(file, openSource);
      const name = file.name.replace(/\.\w+$/, "");
      await app.loadGraphData(workflow, true, true, name, { openSource });
    };
  },
});
