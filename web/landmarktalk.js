// LandmarkTalk frontend touches. The Python side never depends on this file.
//
// Preview images (landmarks drawn on frames) are plain `ui.images` outputs that the core frontend draws
// on the node by itself. This extension adds one line of text under them: a node that returns
// `ui.landmarktalk_summary` (a list of short strings, e.g. ["120 frames", "3 filled", "1 face"]) shows
// them in a read-only field that is never saved into the workflow or sent to the server.
import { app } from "../../scripts/app.js";

export const SUMMARY_KEY = "landmarktalk_summary";
const WIDGET_NAME = "landmarktalk_summary";

export function showSummary(node, parts) {
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (!widget) {
    // Read-only by undoing edits: the frontend draws a disabled widget as its label alone, hiding the text.
    widget = node.addWidget("text", WIDGET_NAME, "", () => { widget.value = widget.summary; }, { serialize: false });
    // Not in widgets_values (would shift the saved values) nor in the API prompt.
    widget.serialize = false;
    widget.label = "result";
  }
  widget.summary = parts.join(" · ");
  widget.value = widget.summary;
  const [width, height] = node.computeSize?.() ?? node.size;
  node.setSize?.([Math.max(node.size[0], width), Math.max(node.size[1], height)]);
  node.setDirtyCanvas?.(true, true);
  return widget;
}

app.registerExtension({
  name: "LandmarkTalk.Summary",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("LandmarkTalk")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const summary = output?.[SUMMARY_KEY];
      if (Array.isArray(summary) && summary.length) showSummary(this, summary.map(String));
    };
  },
});
