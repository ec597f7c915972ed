"""Screenshots of the example workflows in ComfyUI's graph editor, and of Track Face's landmark preview.

Starts ComfyUI headless on 127.0.0.1 with the pack linked in (the helpers of ``comfy_e2e.py``: scratch
folders, ``--cpu``, small cuts of the shared test media, tiny checkpoints under the names the loaders use),
opens its page in a headless Chromium driven by Playwright (1600×1000), and loads each workflow with
``app.loadGraphData``. It fails on missing nodes or errors (an unregistered node type, a node the editor
marks as erroneous, "Missing Nodes" / "N errors found" on the page) and on widgets whose value in the editor
is not what the file means (``widgets_values`` read against ``/object_info`` as ``comfy_e2e`` converts
them). It fits the view and saves ``docs/images/comfyui_<workflow>.png``. Then it loads the face part of
``revoice_video_paste_back`` (Load Video → Get Video Components → Match Frames to Audio → Track Face →
Align Faces → Draw Landmarks), queues it from the page, and saves ``docs/images/comfyui_landmark_preview.png``
with the previews and the summary lines of ``web/landmarktalk.js`` on the nodes.

``--repair-widgets DIR`` works around what the checks find, for the pictures only (the checks still fail):
widgets set by name to the values the file means, the frontend's save of that graph written into DIR and
reloaded, a disabled summary widget shown.

Privacy: the test media show real people. Every file the page fetches through ``/view`` (input previews,
node previews) is replaced before the browser sees it: images are pixelated in blocks of an eighth of their
short side (at least 16 px), keeping only the green landmark outlines that Track Face draws; videos are
served as a pixelated copy; landmark drawings on black pass as they are. No unpixelated face reaches a
screenshot.

    /path/to/comfy-venv/bin/python scripts/comfy_screenshots.py --comfyui-dir /path/to/ComfyUI \\
        --python /path/to/comfy-venv/bin/python --chromium /usr/bin/chromium

Needs, in the Python that runs it: ``playwright`` (the pip package only; the browser is the system
Chromium, nothing is downloaded), Pillow, numpy and OpenCV. Exit codes: 0 all checks passed, 1 a check
failed, 2 ComfyUI could not be started. Without ``--comfyui-dir`` / ``COMFYUI_DIR`` it prints a skip message.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_e2e as e2e  # noqa: E402  (the sibling script: server, link, inputs)

IMAGES_DIR = e2e.PACK_DIR / "docs" / "images"
VIEWPORT = {"width": 1600, "height": 1000}
# Pixelation blocks: an eighth of the image's short side (32 px on the 256² inputs), never under 16 px, so a
# face is a handful of blocks across.
MIN_BLOCK_PX = 16
BLOCKS_ACROSS = 8
# A frame of real video is never this much pure black; a landmark drawing without background is.
DRAWING_BLACK_FRACTION = 0.8
MAX_PNG_BYTES = 400_000
TRACK_SOURCE = "revoice_video_paste_back.json"
TRACK_NODES = {1, 2, 3, 10, 11, 12, 22}  # load video/audio, components, match, track, align, draw
PREVIEW_NAME = "landmark_preview"
PREVIEW_NODES = [11, 22]  # Track Face, Draw Landmarks
# English texts the frontend shows when a workflow names node types it does not know.
MISSING_NODE_TEXTS = ("Missing Nodes", "Missing Custom Nodes", "Missing Node Packs", "unsupported nodes",
                      "missing nodes", "Node types not found")
# ... and the panel it shows for any node with an error (e.g. a model file that is not in the list).
ERROR_TEXTS = ("errors found", "error found", "Missing Models", "missing models")
# Browser-side settings for a clean, reproducible page (no tutorial, no minimap over the graph).
# MinFontSizeForLOD 0: nodes keep their text when fit-to-view zooms far out (else they become grey boxes).
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0,
            "Comfy.Release.Status": "skipped", "Comfy.Locale": "en"}


class ScreenshotError(RuntimeError):
    """A check failed (exit code 1)."""


# ---------------------------------------------------------------------------------------------------
# Privacy: what /view serves is pixelated before the browser draws it.

def _outline_mask(rgb):
    """Pixels of Track Face's green outlines (nodes/face.py _OUTLINE_RGB, alpha-blended over the frame)."""
    import numpy as np

    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return (g > 150) & (g - r > 90) & (g - b > 60)


def block_px(width: int, height: int) -> int:
    return max(MIN_BLOCK_PX, min(width, height) // BLOCKS_ACROSS)


def is_drawing_on_black(rgb) -> bool:
    """Draw Landmarks without a background: outlines on pure black, no photo (nothing to hide)."""
    return float((rgb.max(axis=-1) == 0).mean()) >= DRAWING_BLACK_FRACTION


def pixelate_image(data: bytes, keep_outlines: bool) -> bytes:
    """The image in ``data`` pixelated in blocks of ``block_px`` (outline pixels kept when asked), as PNG
    bytes; a landmark drawing on black is passed through."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    if is_drawing_on_black(np.asarray(image)):
        return data
    width, height = image.size
    block = block_px(width, height)
    small = image.resize((max(1, round(width / block)), max(1, round(height / block))), Image.Resampling.BOX)
    blocky = np.asarray(small.resize((width, height), Image.Resampling.NEAREST)).copy()
    if keep_outlines:
        original = np.asarray(image)
        mask = _outline_mask(original)
        blocky[mask] = original[mask]
    out = io.BytesIO()
    Image.fromarray(blocky).save(out, format="PNG")
    return out.getvalue()


def pixelate_video(ffmpeg: str, source: Path, target: Path) -> None:
    """A copy of ``source`` whose frames are pixelated in blocks of ``block_px`` (audio kept)."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    if not width or not height:
        raise ScreenshotError(f"{source}: cannot read its frame size to pixelate it")
    block = block_px(width, height)
    blocks = (f"scale={max(1, round(width / block))}:{max(1, round(height / block))}:flags=area,"
              f"scale={width}:{height}:flags=neighbor")
    subprocess.run([ffmpeg, "-y", "-v", "error", "-i", str(source), "-vf", blocks, "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "copy", str(target)], check=True)


class ViewPixelator:
    """A Playwright route handler for ``/view``: images pixelated, videos swapped for pixelated copies."""

    VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")

    def __init__(self, server: e2e.ComfyServer, ffmpeg: str, scratch: Path):
        self.server = server
        self.ffmpeg = ffmpeg
        self.scratch = scratch
        self.served: list[str] = []

    def _folder(self, kind: str) -> Path:
        return {"input": self.server.input_dir, "output": self.server.output_dir,
                "temp": self.server.work_dir / "temp"}.get(kind, self.server.input_dir)

    def __call__(self, route) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(route.request.url).query)
        name = query.get("filename", [""])[0]
        kind = query.get("type", ["output"])[0]
        if name.lower().endswith(self.VIDEO_SUFFIXES):
            source = self._folder(kind) / query.get("subfolder", [""])[0] / name
            target = self.scratch / f"{kind}_{source.name}"
            if not target.exists():
                pixelate_video(self.ffmpeg, source, target)
            self.served.append(f"{kind}/{name} (video, pixelated copy)")
            route.fulfill(path=str(target), content_type="video/mp4")
            return
        response = route.fetch()
        content_type = response.headers.get("content-type", "")
        if response.status != 200 or not content_type.startswith("image/"):
            route.fulfill(response=response)
            return
        # Only Track Face's temp previews carry outlines; inputs are pixelated whole.
        original = response.body()
        body = pixelate_image(original, keep_outlines=(kind == "temp"))
        self.served.append(f"{kind}/{name} (image, {'pixelated' if body is not original else 'a drawing on black, as is'})")
        route.fulfill(status=200, body=body, content_type="image/png")


# ---------------------------------------------------------------------------------------------------
# The page.

def save_png(png: bytes, path: Path) -> int:
    """Write a screenshot quantised to 128 colours, at the page's double density when that stays under
    MAX_PNG_BYTES, else downscaled (to 1600 px wide first, then by fifths)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    while True:
        out = io.BytesIO()
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
        if out.tell() < MAX_PNG_BYTES or image.width < 800:
            break
        size = ((VIEWPORT["width"], VIEWPORT["height"]) if image.width > VIEWPORT["width"]
                else (image.width * 4 // 5, image.height * 4 // 5))
        image = image.resize(size, Image.Resampling.LANCZOS)
    path.write_bytes(out.getvalue())
    return out.tell()


def missing_node_report(page) -> list[str]:
    """What the page says is wrong: visible text about missing nodes or errors (dialogs, toasts, the error
    panel), node types in the loaded graph the frontend has not registered, nodes it marks as erroneous."""
    found = page.evaluate(
        """(texts) => {
            const problems = [];
            const registered = window.LiteGraph?.registered_node_types ?? {};
            for (const node of window.app.graph.nodes) {
                if (!(node.type in registered)) problems.push(`node ${node.id}: type ${node.type} not registered`);
                if (node.has_errors) problems.push(`node ${node.id} (${node.type}): marked as having errors`);
            }
            // The dialogs, toasts and the error panel the editor shows: whatever of the page is visible.
            for (const line of document.body.innerText.split(/\\r?\\n/))
                if (texts.some((t) => line.includes(t))) problems.push(`page says: ${line.trim().slice(0, 300)}`);
            return problems;
        }""", list(MISSING_NODE_TEXTS + ERROR_TEXTS))
    return found


def _same_value(shown, intended) -> bool:
    if isinstance(intended, bool) or isinstance(shown, bool):
        return shown is intended
    if isinstance(intended, (int, float)) and isinstance(shown, (int, float)):
        return abs(shown - intended) <= 1e-6 * max(1.0, abs(intended))
    return shown == intended


def shown_widgets(page) -> dict:
    """{node id: {widget name: value}} as the frontend holds them after loading."""
    return page.evaluate(
        """() => Object.fromEntries(window.app.graph.nodes.map((n) => [String(n.id),
               Object.fromEntries((n.widgets ?? []).map((w) => [w.name, w.value ?? null]))]))""")


def widget_mismatches(page, workflow: dict, object_info: dict) -> list[str]:
    """Widgets whose value in the editor is not what the workflow means (its widgets_values read against
    /object_info the way comfy_e2e converts it to a prompt): a shifted widgets_values shows up here."""
    intended = e2e.workflow_to_prompt(workflow, object_info)
    shown = shown_widgets(page)
    problems = []
    for node_id, entry in intended.items():
        widgets = shown.get(node_id, {})
        for name, value in entry["inputs"].items():
            if isinstance(value, list):
                continue  # a link
            if name not in widgets:
                problems.append(f"node {node_id} ({entry['class_type']}): no widget {name!r} in the editor")
            elif not _same_value(widgets[name], value):
                problems.append(f"node {node_id} ({entry['class_type']}): widget {name!r} shows "
                                f"{widgets[name]!r}, the workflow means {value!r}")
    return problems


def repair_widgets(page, workflow: dict, object_info: dict) -> dict:
    """Set every widget by name to the value the workflow means (seed controls to "fixed") and return the
    graph as the frontend saves it: the widgets_values layout this frontend version reads back."""
    intended = {node_id: {name: value for name, value in entry["inputs"].items() if not isinstance(value, list)}
                for node_id, entry in e2e.workflow_to_prompt(workflow, object_info).items()}
    return page.evaluate(
        """(intended) => {
            for (const [id, values] of Object.entries(intended)) {
                const node = window.app.graph.getNodeById(Number(id));
                for (const [name, value] of Object.entries(values)) {
                    const widget = node.widgets?.find((w) => w.name === name);
                    if (!widget) continue;
                    widget.value = value;
                    widget.callback?.(value, window.app.canvas, node);
                }
                for (const widget of node.widgets ?? [])
                    if (widget.name === 'control_after_generate') widget.value = 'fixed';
            }
            window.app.canvas.setDirty(true, true);
            return window.app.graph.serialize();
        }""", intended)


def close_popups(page) -> None:
    """Dismiss toasts and dialogs that are not about missing nodes (e.g. a settings or release notice)."""
    for _ in range(3):
        page.keyboard.press("Escape")
        page.wait_for_timeout(150)


def load_graph(page, workflow: dict, name: str) -> None:
    page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name, {}); }",
                  [workflow, name])
    page.wait_for_timeout(2500)


def fit_view(page, node_ids: list[int] | None = None) -> float:
    """Zoom and pan so the nodes (all, or ``node_ids``) fill the canvas below the floating toolbar, with a
    small margin (the editor's own Fit View leaves a wide one); returns the zoom."""
    scale = page.evaluate(
        """(ids) => {
            const app = window.app, canvas = app.canvas;
            const nodes = ids ? ids.map((id) => app.graph.getNodeById(id)) : app.graph.nodes;
            const title = window.LiteGraph.NODE_TITLE_HEIGHT ?? 30;
            let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
            for (const n of nodes) {
                x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title - 12);
                x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
            }
            const rect = canvas.canvas.getBoundingClientRect();
            // The side bar and the run toolbar float over the canvas' left and top edges.
            const left = 72, top = 96, right = 12, bottom = 12;
            const width = rect.width - left - right, height = rect.height - top - bottom;
            const scale = Math.min(width / (x1 - x0), height / (y1 - y0), 1.6);
            canvas.ds.scale = scale;
            canvas.ds.offset[0] = (left + (width - (x1 - x0) * scale) / 2) / scale - x0;
            canvas.ds.offset[1] = (top + (height - (y1 - y0) * scale) / 2) / scale - y0;
            canvas.setDirty(true, true);
            return scale;
        }""", node_ids)
    page.wait_for_timeout(1200)
    return scale


def frontend_versions(page) -> dict:
    return page.evaluate(
        """() => ({frontend: window.__COMFYUI_FRONTEND_VERSION__ ?? null, userAgent: navigator.userAgent})""")


def track_workflow(source: Path) -> dict:
    """The face-tracking part of a re-voice workflow, with Draw Landmarks fed by Align Faces' landmarks
    (drawn on black: no face in that preview)."""
    workflow = json.loads(source.read_text(encoding="utf-8"))
    nodes = [copy.deepcopy(n) for n in workflow["nodes"] if n["id"] in TRACK_NODES]
    links = [link for link in workflow["links"] if link[1] in TRACK_NODES and link[3] in TRACK_NODES]
    kept = {link[0] for link in links}
    new_link = [max(link[0] for link in workflow["links"]) + 1, 12, 1, 22, 0, "LT_LANDMARKS"]
    links.append(new_link)
    for node in nodes:
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in kept:
                slot["link"] = None
        for slot in node.get("outputs", []):
            slot["links"] = [link for link in slot.get("links") or [] if link in kept]
        if node["id"] == 22:
            node["inputs"][0]["link"] = new_link[0]
            node["pos"] = [1900, 0]
            node["widgets_values"] = [128, True]
        if node["id"] == 12:
            node["outputs"][1]["links"].append(new_link[0])
    workflow.update(nodes=nodes, links=links, last_link_id=new_link[0], groups=[])
    return workflow


def wait_for_queue(server: e2e.ComfyServer, timeout_s: float) -> dict:
    """Wait until the queue is empty; return the newest /history entry."""
    deadline = time.monotonic() + timeout_s
    time.sleep(1.0)
    while time.monotonic() < deadline:
        queue = e2e.fetch_json(server.base_url, "/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            history = e2e.fetch_json(server.base_url, "/history?max_items=1") or {}
            if history:
                return next(iter(history.values()))
        time.sleep(0.5)
    raise ScreenshotError(f"the track workflow did not finish within {timeout_s:.0f} s")


def shoot(page, path: Path, what: str) -> None:
    size = save_png(page.screenshot(), path)
    print(f"{path.name}: {size / 1000:.0f} kB ({what})")


def run(server: e2e.ComfyServer, chromium: str, out_dir: Path, python: str, media_dir: Path,
        prompt_timeout: float, repaired_dir: Path | None = None, workflows_dir: Path = e2e.WORKFLOWS_DIR) -> list[str]:
    from playwright.sync_api import sync_playwright

    workflows = sorted(workflows_dir.glob("*.json"))
    if not workflows:
        raise ScreenshotError(f"no *.json workflow in {workflows_dir}")
    e2e.prepare_inputs(server, python, media_dir)
    scratch = server.work_dir / "pixelated"
    scratch.mkdir()
    pixelator = ViewPixelator(server, e2e.ffmpeg_path(python), scratch)
    failures: list[str] = []
    object_info = e2e.fetch_json(server.base_url, "/object_info", timeout_s=120.0)
    # Tiny checkpoints under the names the loaders are set to, so the editor lists them (no missing-model mark).
    failures += e2e.prepare_models(server, python, e2e.workflow_model_files(workflows, object_info))
    object_info = e2e.fetch_json(server.base_url, "/object_info", timeout_s=120.0)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--mute-audio"])
        try:
            print(f"browser: {browser.version} ({chromium})")
            # Drawn at twice the pixel density: the small text of a zoomed-out graph stays legible.
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=2)
            console_errors: list[str] = []
            not_found: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: not_found.append(urllib.parse.urlparse(r.url).path) if r.status == 404 else None)
            page.route("**/view?*", pixelator)
            page.goto(server.base_url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app?.graph && window.app.canvas && window.LiteGraph", timeout=120_000)
            page.wait_for_function("() => 'LandmarkTalkTrackFace' in window.LiteGraph.registered_node_types",
                                   timeout=60_000)
            page.wait_for_timeout(2000)
            close_popups(page)
            print(f"frontend: {frontend_versions(page)}")
            for path in workflows:
                workflow = json.loads(path.read_text(encoding="utf-8"))
                load_graph(page, workflow, path.stem)
                problems = missing_node_report(page)
                if problems:
                    failures += [f"{path.name}: {p}" for p in problems]
                    print(f"{path.name}: PROBLEMS: {problems}")
                else:
                    print(f"{path.name}: loaded, {page.evaluate('() => window.app.graph.nodes.length')} nodes, "
                          "no missing-node warning")
                mismatches = widget_mismatches(page, workflow, object_info)
                for problem in mismatches:
                    print(f"  widget mismatch: {problem}")
                failures += [f"{path.name}: {p}" for p in mismatches]
                if mismatches and repaired_dir:
                    saved = repair_widgets(page, workflow, object_info)
                    left = widget_mismatches(page, workflow, object_info)
                    (repaired_dir / path.name).write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
                    # Load the frontend's own save of the repaired graph, so its checks (missing media, models)
                    # run again on the values the workflow means, as they would on a fixed file.
                    load_graph(page, saved, path.stem)
                    left += missing_node_report(page)
                    print(f"  repaired by widget name and reloaded: {left or 'no problem left'}; the frontend's save "
                          f"of it: {repaired_dir / path.name}")
                close_popups(page)
                scale = fit_view(page)
                shoot(page, out_dir / f"comfyui_{path.stem}.png", f"graph editor, whole graph at {scale:.0%}")

            load_graph(page, track_workflow(workflows_dir / TRACK_SOURCE), "face_track_preview")
            problems = missing_node_report(page)
            failures += [f"track workflow: {p}" for p in problems]
            started = time.monotonic()
            page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
            entry = wait_for_queue(server, prompt_timeout)
            error = e2e.history_error(entry)
            print(f"track workflow ran in {time.monotonic() - started:.1f} s: {error or 'success'}; "
                  f"outputs of nodes {sorted(entry.get('outputs', {}))}")
            if error:
                failures.append(f"track workflow: {error}")
            page.wait_for_timeout(3000)  # previews fetched and drawn
            summary = page.evaluate(
                """() => window.app.graph.nodes.filter((n) => n.widgets?.some((w) => w.name === 'landmarktalk_summary'))
                       .map((n) => { const w = n.widgets.find((w) => w.name === 'landmarktalk_summary');
                                     return {node: n.type, value: w.value, disabled: !!w.computedDisabled}; })""")
            print(f"summary widgets added by web/landmarktalk.js: {summary}")
            if len(summary) < 2:
                failures.append(f"expected the summary line on Track Face and Draw Landmarks, got {summary}")
            if any(item["disabled"] for item in summary):
                # Frontend 1.49.6 draws a disabled widget as its grey label alone: the value is not shown.
                failures.append("web/landmarktalk.js: the summary widget is disabled, and this frontend draws a "
                                "disabled widget as its label only ('result'), so the summary text is not visible")
                if repaired_dir:
                    page.evaluate(
                        """() => { for (const n of window.app.graph.nodes) for (const w of n.widgets ?? [])
                                       if (w.name === 'landmarktalk_summary') w.disabled = false; }""")
                    print("  summary widgets enabled in the page for the screenshot (--repair-widgets)")
            # One frame per preview, large: Track Face (frames + green outlines, pixelated) and Draw Landmarks.
            page.evaluate(
                """(ids) => { for (const id of ids) { const n = window.app.graph.getNodeById(id);
                                 n.imageIndex = 0; n.setSize([n.size[0], n.size[1] + 260]); }
                             window.app.canvas.setDirty(true, true); }""", PREVIEW_NODES)
            close_popups(page)
            fit_view(page, sorted(TRACK_NODES - {1, 2, 3}))
            shoot(page, out_dir / f"comfyui_{PREVIEW_NAME}.png", "track workflow after a run, previews on the nodes")
            print(f"served through the pixelator: {sorted(set(pixelator.served))}")
            if console_errors:
                print(f"browser console errors ({len(console_errors)}): {sorted(set(console_errors))[:6]}")
            if not_found:
                print(f"404 answers: {sorted(set(not_found))}")
        finally:
            browser.close()
    return failures


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"),
                        help="ComfyUI checkout (default: $COMFYUI_DIR); without it the run is skipped")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="Python of ComfyUI's environment (default: $COMFYUI_PYTHON or this Python)")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                        help="the Chromium binary Playwright drives (default: $CHROMIUM or /usr/bin/chromium)")
    parser.add_argument("--media-dir", default=str(e2e.PACK_DIR.parent / "shared" / "data"),
                        help="the shared test media folder (default: ../shared/data)")
    parser.add_argument("--out-dir", default=str(IMAGES_DIR), help="where the PNGs go (default: docs/images)")
    parser.add_argument("--start-timeout", type=float, default=240.0, help="seconds to wait for the server")
    parser.add_argument("--prompt-timeout", type=float, default=600.0, help="seconds to wait for the track run")
    parser.add_argument("--workflows-dir", default=str(e2e.WORKFLOWS_DIR),
                        help="the UI-format workflows to load (default: example_workflows)")
    parser.add_argument("--repair-widgets", metavar="DIR",
                        help="work around what the checks find, for the screenshots: set widgets whose value the editor "
                             "reads differently from what the workflow means by name (the frontend's save of the "
                             "repaired graph goes into DIR), and show a disabled summary widget's text")
    parser.add_argument("--keep-dir", action="store_true", help="keep the scratch folder (server log)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if not args.comfyui_dir:
        print("skipped: COMFYUI_DIR not set (give --comfyui-dir or set COMFYUI_DIR to a ComfyUI checkout)")
        return 0
    comfyui_dir = Path(args.comfyui_dir).expanduser().resolve()
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="comfy_shots_"))
    failures: list[str] = []
    try:
        link = e2e.link_pack(comfyui_dir)
        print(f"pack linked: {link} -> {os.readlink(link) if link.is_symlink() else link}")
        settings = work_dir / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True)
        settings.write_text(json.dumps(SETTINGS), encoding="utf-8")
        with e2e.ComfyServer(comfyui_dir, args.python, work_dir) as server:
            server.start(args.start_timeout)
            stats = e2e.fetch_json(server.base_url, "/system_stats")["system"]
            print(f"ComfyUI {stats.get('comfyui_version')} on {server.base_url} (python {stats.get('python_version', '')[:6]})")
            try:
                repaired_dir = Path(args.repair_widgets).resolve() if args.repair_widgets else None
                if repaired_dir:
                    repaired_dir.mkdir(parents=True, exist_ok=True)
                failures = run(server, args.chromium, out_dir, args.python, Path(args.media_dir), args.prompt_timeout,
                               repaired_dir, Path(args.workflows_dir).resolve())
            except (ScreenshotError, e2e.WorkflowError) as exc:
                failures = [str(exc)]
            except Exception as exc:  # a Playwright error or timeout: report it, the server still stops
                if type(exc).__module__.split(".")[0] != "playwright":
                    raise
                failures = [f"browser: {type(exc).__name__}: {str(exc)[:1500]}"]
            if failures:
                print(f"server log tail:\n{server.log_tail()}")
        print(f"server stopped (exit code {server.process.returncode})")
    except (e2e.E2EError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep_dir:
            print(f"scratch folder kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    for failure in failures:
        print(f"FAILED: {failure}")
    print("screenshots: written" if not failures else f"screenshots: {len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
