"""web/landmarktalk.js run under Node.js against a stand-in for the frontend's app shim."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

WEB_FILE = Path(__file__).resolve().parent.parent / "web" / "landmarktalk.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js not installed: the frontend extension is not exercised")

# A stand-in for /scripts/app.js and a LiteGraph-like node: enough of both for the extension's calls.
APP_STUB = "export const app = { extensions: [], registerExtension(e) { this.extensions.push(e); } };\n"
HARNESS = r"""
import { app } from "./scripts/app.js";
await import("./extensions/ComfyUI-LandmarkTalk/landmarktalk.js");
const [extension] = app.extensions;
class FakeNode {
  constructor() { this.widgets = []; this.size = [200, 80]; this.seen = []; }
  onExecuted(output) { this.seen.push(output); }
  addWidget(type, name, value, callback, options) {
    const widget = { type, name, value, callback, options };
    this.widgets.push(widget);
    return widget;
  }
  computeSize() { return [180, 80 + 24 * this.widgets.length]; }
  setSize(size) { this.size = size; }
  setDirtyCanvas() {}
}
const results = {};
await extension.beforeRegisterNodeDef(FakeNode, { name: "LandmarkTalkTrackFace" });
const node = new FakeNode();
node.onExecuted({ images: [], landmarktalk_summary: ["120 frames", 3, "1 face"] });
node.onExecuted({ images: [], landmarktalk_summary: ["60 frames"] });
const [summary] = node.widgets;
summary.value = "edited";  // what the frontend does on an edit, before it calls the callback
summary.callback(summary.value);
results.tracked = { widgets: node.widgets, size: node.size, chained: node.seen.length };
class OtherNode { onExecuted() {} addWidget() { throw new Error("touched a core node"); } }
await extension.beforeRegisterNodeDef(OtherNode, { name: "KSampler" });
new OtherNode().onExecuted({ landmarktalk_summary: ["x"] });
class PlainNode extends FakeNode {}
await extension.beforeRegisterNodeDef(PlainNode, { name: "LandmarkTalkMatchFramesToAudio" });
const plain = new PlainNode();
plain.onExecuted({ images: [] });
results.plain = plain.widgets.length;
results.name = extension.name;
console.log(JSON.stringify(results));
"""


def test_summary_is_shown_once_never_serialized_and_only_on_our_nodes(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(APP_STUB)
    ext_dir = tmp_path / "extensions" / "ComfyUI-LandmarkTalk"
    ext_dir.mkdir(parents=True)
    shutil.copy(WEB_FILE, ext_dir / "landmarktalk.js")
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "harness.js").write_text(HARNESS)
    result = subprocess.run([NODE, "harness.js"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results["name"].startswith("LandmarkTalk.")
    tracked = results["tracked"]
    assert tracked["chained"] == 2  # the node's own onExecuted still runs
    assert len(tracked["widgets"]) == 1  # reused on the second run, not added again
    widget = tracked["widgets"][0]
    assert widget["value"] == "60 frames" and widget["serialize"] is False
    assert widget["options"]["serialize"] is False
    # Not disabled (frontend 1.49.6 would draw only its label); an edit is undone by the callback instead.
    assert not widget.get("disabled")
    assert tracked["size"][1] >= 104  # grew to fit the field
    assert results["plain"] == 0  # no summary in the output: nothing added
