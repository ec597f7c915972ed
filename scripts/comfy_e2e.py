"""End-to-end check of the pack inside a real ComfyUI.

Links this repository into ``<comfyui>/custom_nodes/ComfyUI-LandmarkTalk``, starts ComfyUI headless on
127.0.0.1 (a free port, ``--cpu`` by default, scratch input/output/models/user folders), waits for it, and
checks the pack: its log lines, the models folder, the frontend extension, the ``LandmarkTalk*`` nodes in
``/object_info`` against the ids written in ``nodes/*.py``, and every example workflow against
``/object_info``. Then, optionally:

- ``--write-object-info PATH``: writes the snapshot tests/test_workflow_schemas.py checks workflows against;
- ``--run-workflows``: converts each example and test workflow to an API prompt, runs it on small cuts of
  the shared test media with tiny models (fitted by the engine's own ``fit``, two steps per model),
  probes every saved video (audio present, frame count = round(speech duration × fps)), checks that
  ``/free {"unload_models": true}`` unloads our models and that ``/interrupt`` stops a run and leaves no file.

    python scripts/comfy_e2e.py --comfyui-dir /path/to/ComfyUI --python /path/to/comfy-venv/bin/python --run-workflows

Without ``--comfyui-dir`` or ``COMFYUI_DIR`` it prints a skip message and exits 0. Exit codes: 0 passed or
skipped, 1 a check failed, 2 ComfyUI could not be set up or started. Standard library only (the media
probing and training run in ComfyUI's Python, which has the pack's dependencies).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = PACK_DIR / "example_workflows"
TEST_WORKFLOWS_DIR = PACK_DIR / "tests" / "data"
SNAPSHOT_PATH = TEST_WORKFLOWS_DIR / "object_info_landmarktalk.json"
LINK_NAME = "ComfyUI-LandmarkTalk"
NODE_PREFIX = "LandmarkTalk"
MODELS_FOLDER = "landmarktalk"
LOOPBACK = "127.0.0.1"
# Log lines with which ComfyUI's custom-node loader reports a pack that failed to load.
_PACK_FAILURE_PATTERNS = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint", "Skip ")


class E2EError(RuntimeError):
    """ComfyUI could not be set up or started (exit code 2)."""


def expected_node_ids(pack_dir: Path = PACK_DIR) -> list[str]:
    """Every ``node_id="LandmarkTalk..."`` written in ``nodes/*.py``, read with ast (nothing is imported)."""
    found = set()
    for path in sorted((pack_dir / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "node_id"
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and node.value.value.startswith(NODE_PREFIX)
            ):
                found.add(node.value.value)
    return sorted(found)


def link_pack(comfyui_dir: Path, pack_dir: Path = PACK_DIR) -> Path:
    """Symlink the pack into custom_nodes (idempotent); refuse to touch anything that is not our link."""
    custom_nodes = comfyui_dir / "custom_nodes"
    if not (comfyui_dir / "main.py").is_file() or not custom_nodes.is_dir():
        raise E2EError(f"--comfyui-dir {comfyui_dir}: no main.py and custom_nodes/ there; point it at a ComfyUI checkout")
    link = custom_nodes / LINK_NAME
    if link.is_symlink():
        if link.resolve() == pack_dir.resolve():
            return link
        link.unlink()  # our link name pointing at another checkout: repoint it
    elif link.exists():
        if link.resolve() == pack_dir.resolve():
            return link
        raise E2EError(f"{link} exists and is not a link to {pack_dir}; move it away and rerun")
    link.symlink_to(pack_dir.resolve(), target_is_directory=True)
    return link


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def fetch_json(base_url: str, route: str, payload: dict | None = None, timeout_s: float = 30.0):
    """GET (or POST ``payload`` as JSON) ``route`` and decode the JSON answer; HTTP errors keep their body."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(base_url + route, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        raise RuntimeError(f"{route}: HTTP {exc.code}: {body[:2000].decode('utf-8', 'replace')}") from exc
    return json.loads(body) if body else None


# ---------------------------------------------------------------------------------------------------
# UI-format workflows (what the frontend saves) → API-format prompts (what /prompt runs), driven by
# /object_info; and checks of both against /object_info (used offline by tests/test_workflow_schemas.py).

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
# A node with upload combos ends its widgets_values with frontend-only values (the upload button, the audio
# player), after all its other widgets; one upload widget per node, of its first upload combo's kind
# (checked in frontend 1.49.6: LoadImage/LoadVideo [.., "image"], LoadAudio [.., null, ""]).
UPLOAD_EXTRA_VALUES = {"image_upload": 1, "video_upload": 1, "audio_upload": 2}
# The frontend gives an INT input with one of these names a control_after_generate widget by itself.
SEED_NAMES = ("seed", "noise_seed")
FRONTEND_ONLY_NODES = {"Note", "MarkdownNote"}
MODE_MUTED = 2


class WorkflowError(ValueError):
    """A workflow that does not fit /object_info; the message names the node and the input."""


def input_type(spec: list) -> str:
    """The socket type of an /object_info input spec (V1 list combos are COMBO)."""
    return "COMBO" if isinstance(spec[0], list) else str(spec[0])


def input_options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec: list) -> list:
    return spec[0] if isinstance(spec[0], list) else list(input_options(spec).get("options") or [])


def is_widget(spec: list) -> bool:
    """Whether the frontend shows this input as a widget (so it has a slot in widgets_values)."""
    options = input_options(spec)
    return input_type(spec) in WIDGET_TYPES and not options.get("forceInput") and not options.get("hidden")


def ordered_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in widget order: required then optional, as input_order says."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {section: list(inputs.get(section) or {}) for section in ("required", "optional")}
    return [(name, inputs[section][name]) for section in ("required", "optional")
            for name in order.get(section) or [] if name in (inputs.get(section) or {})]


def _take_widget_values(name: str, spec: list, values: list, index: int, out: dict, where: str) -> int:
    """Put the widget ``name`` (and a dynamic combo's selected children, as dotted names) into ``out``."""
    if index >= len(values):
        raise WorkflowError(f"{where}: widgets_values has no value for {name!r}")
    value = values[index]
    out[name] = value
    index += 1
    options = input_options(spec)
    if options.get("control_after_generate") or (input_type(spec) == "INT" and name in SEED_NAMES):
        index += 1  # the frontend's "fixed"/"randomize" value
    if input_type(spec) == DYNAMIC_COMBO:
        chosen = next((o for o in options.get("options", []) if o.get("key") == value), None)
        if chosen is None:
            keys = [o.get("key") for o in options.get("options", [])]
            raise WorkflowError(f"{where}: {name!r} = {value!r} is not one of {keys}")
        for child, child_spec in ordered_inputs({"input": chosen.get("inputs", {})}):
            if is_widget(child_spec):
                index = _take_widget_values(f"{name}.{child}", child_spec, values, index, out, where)
    return index


def upload_extra_count(info: dict) -> int:
    """How many frontend-only values end the widgets_values of a node with upload combos."""
    for _, spec in ordered_inputs(info):
        extra = next((n for flag, n in UPLOAD_EXTRA_VALUES.items() if input_options(spec).get(flag)), 0)
        if extra:
            return extra
    return 0


def expected_widget_count(info: dict, values: list) -> int:
    """How many widgets_values a node of this /object_info entry holds (dynamic combos read their choice)."""
    scratch: dict = {}
    index = 0
    for name, spec in ordered_inputs(info):
        if is_widget(spec):
            index = _take_widget_values(name, spec, values, index, scratch, info.get("name", "?"))
    return index + upload_extra_count(info)


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow into the API format /prompt takes (no subgraphs, primitives, bypass)."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise WorkflowError("subgraphs are not supported; flatten the workflow")
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict = {}
    for node in workflow.get("nodes", []):
        node_type, where = node.get("type"), f"node {node.get('id')} ({node.get('type')})"
        if node_type in FRONTEND_ONLY_NODES or node.get("mode") == MODE_MUTED:
            continue
        if node.get("mode", 0) != 0:
            raise WorkflowError(f"{where}: mode {node.get('mode')} (bypass) is not supported; unbypass or delete it")
        if node_type not in object_info:
            raise WorkflowError(f"{where}: no node type {node_type!r} in /object_info (missing pack?)")
        info = object_info[node_type]
        inputs: dict = {}
        values = node.get("widgets_values") or []
        if isinstance(values, dict):
            raise WorkflowError(f"{where}: dict widgets_values are not supported")
        index = 0
        for name, spec in ordered_inputs(info):
            if is_widget(spec):
                index = _take_widget_values(name, spec, values, index, inputs, where)
        index += upload_extra_count(info)
        if index != len(values):
            raise WorkflowError(f"{where}: {len(values)} widgets_values, /object_info implies {index}")
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            link = links.get(slot["link"])
            if link is None:
                raise WorkflowError(f"{where}: input {slot.get('name')!r} names link {slot['link']}, which does not exist")
            inputs[slot["name"]] = [str(link[1]), int(link[2])]
        prompt[str(node["id"])] = {"class_type": node_type, "inputs": inputs,
                                   "_meta": {"title": node.get("title") or info.get("display_name") or node_type}}
    for node_id, entry in prompt.items():
        for name, value in entry["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] not in prompt:
                raise WorkflowError(f"node {node_id}: input {name!r} is linked to node {value[0]}, which is not run")
    return prompt


def _dynamic_spec(info: dict, name: str, inputs: dict) -> list | None:
    """The spec of a dotted dynamic-combo child name (``format.codec``), following the chosen keys."""
    head, *rest = name.split(".")
    spec = dict(ordered_inputs(info)).get(head)
    path = head
    for part in rest:
        if spec is None or input_type(spec) != DYNAMIC_COMBO:
            return None
        chosen = next((o for o in input_options(spec).get("options", []) if o.get("key") == inputs.get(path)), None)
        spec = dict(ordered_inputs({"input": chosen.get("inputs", {})})).get(part) if chosen else None
        path = f"{path}.{part}"
    return spec


def validate_prompt(prompt: dict, object_info: dict, *, check_file_lists: bool = False) -> list[str]:
    """Problems /prompt validation would find: unknown inputs, missing required ones, link and value types.

    File-list combos (uploads, model folders) are only checked with ``check_file_lists``, since their
    options depend on the machine.
    """
    problems = []
    for node_id, entry in prompt.items():
        info = object_info.get(entry["class_type"])
        where = f"node {node_id} ({entry['class_type']})"
        if info is None:
            problems.append(f"{where}: unknown node type")
            continue
        required = info.get("input", {}).get("required") or {}
        for name in required:
            if name not in entry["inputs"]:
                problems.append(f"{where}: required input {name!r} is missing")
        for name, value in entry["inputs"].items():
            spec = _dynamic_spec(info, name, entry["inputs"])
            if spec is None:
                problems.append(f"{where}: no input {name!r} in /object_info")
                continue
            kind = input_type(spec)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                origin = prompt.get(value[0])
                if origin is None:
                    problems.append(f"{where}: {name!r} linked to missing node {value[0]}")
                    continue
                outputs = object_info.get(origin["class_type"], {}).get("output", [])
                if value[1] >= len(outputs):
                    problems.append(f"{where}: {name!r} linked to output {value[1]} of {origin['class_type']}, which has {len(outputs)}")
                elif outputs[value[1]] != kind and "*" not in (kind, outputs[value[1]]):
                    problems.append(f"{where}: {name!r} ({kind}) linked to a {outputs[value[1]]} output")
                continue
            options = input_options(spec)
            if kind in ("COMBO", DYNAMIC_COMBO):
                choices = ([o.get("key") for o in options.get("options", [])] if kind == DYNAMIC_COMBO
                           else combo_options(spec))
                file_list = any(options.get(flag) for flag in UPLOAD_EXTRA_VALUES) or name == "model_name"
                if (check_file_lists or not file_list) and value not in choices:
                    problems.append(f"{where}: {name!r} = {value!r} is not one of {choices[:8]}")
            elif kind in ("INT", "FLOAT"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and not isinstance(value, int)):
                    problems.append(f"{where}: {name!r} = {value!r} is not a {kind}")
                elif ("min" in options and value < options["min"]) or ("max" in options and value > options["max"]):
                    problems.append(f"{where}: {name!r} = {value} outside [{options.get('min')}, {options.get('max')}]")
            elif kind == "BOOLEAN" and not isinstance(value, bool):
                problems.append(f"{where}: {name!r} = {value!r} is not a BOOLEAN")
            elif kind == "STRING" and not isinstance(value, str):
                problems.append(f"{where}: {name!r} = {value!r} is not a STRING")
            elif kind not in WIDGET_TYPES:
                problems.append(f"{where}: socket input {name!r} ({kind}) has a constant instead of a link")
    return problems


def validate_workflow(workflow: dict, object_info: dict) -> list[str]:
    """Check a UI-format workflow against /object_info: node types, input names/types, links, widget counts."""
    problems = []
    nodes = {node["id"]: node for node in workflow.get("nodes", [])}
    for node in nodes.values():
        where = f"node {node['id']} ({node.get('type')})"
        if node.get("type") in FRONTEND_ONLY_NODES:
            continue
        info = object_info.get(node.get("type"))
        if info is None:
            problems.append(f"{where}: no such node type in the /object_info snapshot")
            continue
        specs = dict(ordered_inputs(info))
        for slot in node.get("inputs", []):
            spec = specs.get(slot.get("name"))
            if spec is None:
                problems.append(f"{where}: input {slot.get('name')!r} does not exist")
            elif slot.get("type") != input_type(spec) and input_type(spec) != "*":
                problems.append(f"{where}: input {slot['name']!r} typed {slot.get('type')!r}, /object_info says {input_type(spec)!r}")
        for name, spec in specs.items():
            if not is_widget(spec) and name in (info.get("input", {}).get("required") or {}):
                if not any(s.get("name") == name and s.get("link") is not None for s in node.get("inputs", [])):
                    problems.append(f"{where}: required socket {name!r} is not connected")
        outputs = info.get("output", [])
        for slot_index, slot in enumerate(node.get("outputs", [])):
            if slot_index >= len(outputs):
                problems.append(f"{where}: output slot {slot_index} ({slot.get('name')}) does not exist")
            elif slot.get("type") != outputs[slot_index]:
                problems.append(f"{where}: output {slot_index} typed {slot.get('type')!r}, /object_info says {outputs[slot_index]!r}")
        try:
            count = expected_widget_count(info, node.get("widgets_values") or [])
            if count != len(node.get("widgets_values") or []):
                problems.append(f"{where}: {len(node.get('widgets_values') or [])} widgets_values, expected {count}")
        except WorkflowError as exc:
            problems.append(str(exc))
    for link in workflow.get("links", []):
        link_id, origin_id, origin_slot, target_id, target_slot, link_type = link[:6]
        origin, target = nodes.get(origin_id), nodes.get(target_id)
        if origin is None or target is None:
            problems.append(f"link {link_id}: joins missing node {origin_id if origin is None else target_id}")
            continue
        origin_outputs = object_info.get(origin["type"], {}).get("output", [])
        if origin_slot >= len(origin_outputs) or origin_outputs[origin_slot] != link_type:
            problems.append(f"link {link_id}: typed {link_type!r} but {origin['type']} output {origin_slot} is "
                            f"{origin_outputs[origin_slot] if origin_slot < len(origin_outputs) else 'missing'}")
        if target_slot >= len(target.get("inputs", [])) or target["inputs"][target_slot].get("link") != link_id:
            problems.append(f"link {link_id}: {target['type']} input slot {target_slot} does not point back at it")
        elif link_type != target["inputs"][target_slot].get("type"):
            problems.append(f"link {link_id}: typed {link_type!r} into {target['type']}."
                            f"{target['inputs'][target_slot]['name']} ({target['inputs'][target_slot].get('type')})")
        if link_id not in (origin.get("outputs", [{}] * (origin_slot + 1))[origin_slot].get("links") or []):
            problems.append(f"link {link_id}: {origin['type']} output {origin_slot} does not list it")
    if not problems:
        try:
            problems += validate_prompt(workflow_to_prompt(workflow, object_info), object_info)
        except WorkflowError as exc:
            problems.append(str(exc))
    return problems


def workflow_paths() -> list[Path]:
    """The example workflows, then the test workflows in tests/data."""
    return sorted(WORKFLOWS_DIR.glob("*.json")) + sorted(TEST_WORKFLOWS_DIR.glob("workflow_*.json"))


def workflow_node_types(paths: list[Path]) -> set[str]:
    """Every node type the given workflows use."""
    types = set()
    for path in paths:
        types |= {node["type"] for node in json.loads(path.read_text(encoding="utf-8")).get("nodes", [])}
    return types - FRONTEND_ONLY_NODES


def object_info_snapshot(object_info: dict, extra_types: set[str], comfyui_version: str) -> dict:
    """Our nodes' /object_info entries plus the core ones the workflows use, file lists emptied."""
    snapshot = {"_comfyui_version": comfyui_version}
    for node_type in sorted(object_info):
        if not (node_type.startswith(NODE_PREFIX) or node_type in extra_types):
            continue
        entry = json.loads(json.dumps(object_info[node_type]))
        for section in ("required", "optional"):
            for name, spec in (entry.get("input", {}).get(section) or {}).items():
                options = input_options(spec)
                if any(options.get(flag) for flag in UPLOAD_EXTRA_VALUES) or (
                        node_type.startswith(NODE_PREFIX) and name == "model_name"):
                    if isinstance(spec[0], list):
                        spec[0] = []
                    else:
                        options["options"] = []
        snapshot[node_type] = entry
    return snapshot


class ComfyServer:
    """A ComfyUI process on 127.0.0.1 with its own scratch folders; a context manager that always stops it."""

    def __init__(self, comfyui_dir: Path, python: str, work_dir: Path, device: str = "cpu", port: int | None = None):
        self.comfyui_dir = comfyui_dir
        self.python = python
        self.work_dir = work_dir
        self.device = device
        self.port = port or find_free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = work_dir / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def command(self) -> list[str]:
        cmd = [self.python, "main.py", "--listen", LOOPBACK, "--port", str(self.port), "--disable-auto-launch",
               "--disable-api-nodes", "--database-url", "sqlite:///:memory:"]
        for flag, name in (("--input-directory", "input"), ("--output-directory", "output"),
                           ("--temp-directory", "temp"), ("--user-directory", "user"),
                           ("--models-directory", "models")):
            (self.work_dir / name).mkdir(parents=True, exist_ok=True)
            cmd += [flag, str(self.work_dir / name)]
        if self.device == "cpu":
            cmd.append("--cpu")
        return cmd

    @property
    def models_dir(self) -> Path:
        """The scratch models folder the server reads (our checkpoints go in its landmarktalk/)."""
        return self.work_dir / "models"

    @property
    def input_dir(self) -> Path:
        return self.work_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.work_dir / "output"

    def start(self, timeout_s: float) -> None:
        self._log_file = open(self.log_path, "wb")
        # Unbuffered, so the log checks (e.g. "Requested to load") see lines as soon as they are written.
        self.process = subprocess.Popen(self.command(), cwd=self.comfyui_dir, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise E2EError(f"ComfyUI exited with code {self.process.returncode} while starting; log:\n{self.log_tail()}")
            try:
                fetch_json(self.base_url, "/system_stats", timeout_s=5.0)
                return
            except (OSError, RuntimeError):
                time.sleep(1.0)
        raise E2EError(f"ComfyUI did not answer on {self.base_url} within {timeout_s:.0f} s; log:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            # Ctrl-C is ComfyUI's own clean shutdown path; escalate only if it hangs.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                self.process.send_signal(sig)
                try:
                    self.process.wait(timeout=timeout_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(_strip_ansi(self.log_text()).splitlines()[-lines:])

    def __enter__(self) -> ComfyServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def pack_log_lines(log_text: str) -> list[str]:
    """The server log lines that mention the pack (its import time, warnings, tracebacks' last line)."""
    return [line for line in _strip_ansi(log_text).splitlines() if LINK_NAME in line or NODE_PREFIX in line]


def check_node_schema(node_id: str, info: dict) -> list[str]:
    """STYLE.md §4 rules that /object_info can show: category, description, a tooltip on every input."""
    problems = []
    if not str(info.get("category", "")).startswith(f"{NODE_PREFIX}/"):
        problems.append(f"{node_id}: category {info.get('category')!r} is not under '{NODE_PREFIX}/'")
    if not info.get("description"):
        problems.append(f"{node_id}: no description")
    for section in ("required", "optional"):
        for input_id, spec in (info.get("input", {}).get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not options.get("tooltip"):
                problems.append(f"{node_id}: input {input_id!r} has no tooltip")
    return problems


def check_pack(server: ComfyServer, expected: list[str] | None, strict: bool) -> tuple[list[str], dict]:
    """Run the checks against a started server; return the failures (empty when all passed) and /object_info."""
    failures = []
    pack_lines = pack_log_lines(server.log_text())
    print("pack lines in the server log:")
    for line in pack_lines:
        print(f"  {line}")
    failures += [f"log: {line}" for line in pack_lines if any(p in line for p in _PACK_FAILURE_PATTERNS)]

    folders = fetch_json(server.base_url, "/api/experiment/models")
    if not any(folder.get("name") == MODELS_FOLDER for folder in folders):
        failures.append(f"/api/experiment/models has no '{MODELS_FOLDER}' folder: the entry point did not register it")
    else:
        folder = next(f for f in folders if f.get("name") == MODELS_FOLDER)
        print(f"models folder: {folder}")

    extensions = [url for url in fetch_json(server.base_url, "/extensions") if f"/{LINK_NAME}/" in url]
    print(f"frontend extension files: {extensions}")
    if not extensions:
        failures.append(f"/extensions lists no file of {LINK_NAME}: WEB_DIRECTORY was not registered")
    for url in extensions:
        with urllib.request.urlopen(server.base_url + url, timeout=30) as response:
            if response.status != 200 or b"registerExtension" not in response.read():
                failures.append(f"{url}: not served, or not a frontend extension")

    object_info = fetch_json(server.base_url, "/object_info", timeout_s=120.0)
    registered = sorted(node_id for node_id in object_info if node_id.startswith(NODE_PREFIX))
    print(f"/object_info: {len(object_info)} nodes, {len(registered)} {NODE_PREFIX}* nodes: {registered}")
    if expected is not None:
        print(f"expected {len(expected)} nodes: {expected}")
        missing = sorted(set(expected) - set(registered))
        unexpected = sorted(set(registered) - set(expected))
        if missing:
            failures.append(f"nodes not registered: {missing} (see the pack lines above for the import error)")
        if unexpected:
            failures.append(f"nodes registered but not expected: {unexpected}")
    style_problems = [p for node_id in registered for p in check_node_schema(node_id, object_info[node_id])]
    for problem in style_problems:
        print(f"style: {problem}")
    if strict:
        failures += style_problems
    for path in workflow_paths():
        problems = validate_workflow(json.loads(path.read_text(encoding="utf-8")), object_info)
        print(f"workflow {path.name}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
        failures += [f"{path.name}: {problem}" for problem in problems]
    return failures, object_info


# ---------------------------------------------------------------------------------------------------
# Running the workflows: inputs made from the shared test media, tiny models, outputs probed.

CLIENT_ID = "landmarktalk-e2e"
# Input files the workflows name → (file in the shared media folder, ffmpeg options that make it small).
WORKFLOW_INPUTS = {
    "landmarktalk_face.mp4": ("clips/vretalking_face_2.mp4",
                              ["-t", "2", "-vf", "scale=256:256", "-r", "25", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                               "-c:a", "aac"]),
    "landmarktalk_face.png": ("images/happy.png", ["-vf", "scale=256:256"]),
    "landmarktalk_speech.wav": ("audio/RD_Radio31_000.wav", ["-t", "2.4", "-ac", "1"]),
}
# Which input's duration an output video must follow (frame count = round(duration × fps)).
SPEECH_INPUT = "landmarktalk_speech.wav"
_PROBE_SCRIPT = (
    "import dataclasses, json, sys\n"
    "from pipelines.media import probe_media\n"
    "print(json.dumps(dataclasses.asdict(probe_media(sys.argv[1]))))\n"
)


# Checkpoints the workflows' loaders name → how the e2e makes tiny ones when no fit workflow did: the engine's own
# `fit` / `train` with two steps per model on the small test clip (plumbing, not quality). Wav2Lip gets random
# weights at a quarter of the official width (the official weights are the user's to download and convert).
TINY_MODEL_RECIPES = [
    (("person/a2l.safetensors", "person/l2v.safetensors", "person/face_autoencoder.safetensors"),
     ["-m", "pipelines", "fit", "{clip}", "--out", "{models}/person", "--steps", "2", "--cache-dir", "{cache}"]),
    (("person/sovqae.safetensors",),
     ["-m", "pipelines", "train", "sovqae", "--data", "{clip}", "--out", "{models}/person/sovqae.safetensors",
      "--preset", "cpu128", "--crop-size", "128", "--steps", "2", "--batch-size", "2", "--val-every", "1000",
      "--save-every", "1000", "--cache-dir", "{cache}"]),
    (("wav2lip_gan.safetensors",),
     ["-c", "import sys; from pipelines.checkpoint import save_checkpoint; "
            "from pipelines.models.wav2lip import Wav2Lip, Wav2LipConfig; "
            "save_checkpoint(Wav2Lip(Wav2LipConfig(base_channels=4)), sys.argv[1])", "{models}/wav2lip_gan.safetensors"]),
]
TRAINING_CLIP = "landmarktalk_face.mp4"
# Nodes that load models and sample with a seed: the memory and Cancel checks run on workflows holding one.
SAMPLING_NODES = {"LandmarkTalkLandmarkDiffusionSampler", "LandmarkTalkRender"}
# Widget values the e2e lowers so CPU runs stay short (the workflows keep their real defaults).
E2E_OVERRIDES = {
    "LandmarkTalkFit": {"steps": 2},
    "LandmarkTalkLandmarkDiffusionSampler": {"steps": 4},
    "LandmarkTalkRender": {"steps": 4},
}


def e2e_prompt(path: Path, object_info: dict) -> dict:
    """A workflow as the API prompt the e2e runs: converted, with E2E_OVERRIDES applied."""
    prompt = workflow_to_prompt(json.loads(path.read_text(encoding="utf-8")), object_info)
    for entry in prompt.values():
        entry["inputs"].update(E2E_OVERRIDES.get(entry["class_type"], {}))
    return prompt


def workflow_model_files(paths: list[Path], object_info: dict) -> set[str]:
    """The checkpoint names our loader nodes are set to in the given workflows."""
    names = set()
    for path in paths:
        names |= {entry["inputs"]["model_name"] for entry in e2e_prompt(path, object_info).values()
                  if entry["class_type"].startswith(NODE_PREFIX) and isinstance(entry["inputs"].get("model_name"), str)}
    return names


def prepare_models(server: ComfyServer, python: str, needed: set[str]) -> list[str]:
    """Make tiny versions of the checkpoints the workflows need that are not there yet; return failures."""
    models = server.models_dir / MODELS_FOLDER
    missing = {name for name in needed if not (models / name).is_file()}
    failures = []
    for produces, argv in TINY_MODEL_RECIPES:
        if not missing & set(produces):
            continue
        values = {"clip": str(server.input_dir / TRAINING_CLIP), "cache": str(server.work_dir / "cache"),
                  "models": str(models)}
        command = [python, *[a.format(**values) for a in argv]]
        started = time.monotonic()
        result = subprocess.run(command, cwd=PACK_DIR, capture_output=True, text=True)
        if result.returncode != 0:
            failures.append(f"making {', '.join(produces)} failed: {result.stderr.strip()[-1500:]}")
        else:
            print(f"made tiny {', '.join(produces)} in {time.monotonic() - started:.0f} s "
                  f"({' '.join(argv[:4]) if argv[0] == '-m' else 'random weights'})")
        missing -= set(produces)
    failures += [f"{name}: not in models/{MODELS_FOLDER}/ and no recipe makes it (see TINY_MODEL_RECIPES)"
                 for name in sorted(missing)]
    return failures


def ffmpeg_path(python: str) -> str:
    """The ffmpeg binary imageio-ffmpeg ships in ComfyUI's environment (the pack's own dependency)."""
    result = subprocess.run([python, "-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def prepare_inputs(server: ComfyServer, python: str, media_dir: Path) -> None:
    """Write the workflows' input files (small cuts of the shared media) into the server's input folder."""
    ffmpeg = ffmpeg_path(python)
    for name, (source, options) in WORKFLOW_INPUTS.items():
        if not (media_dir / source).is_file():
            raise E2EError(f"--media-dir {media_dir}: {source} not found; point it at the shared test media")
        subprocess.run([ffmpeg, "-y", "-v", "error", "-i", str(media_dir / source), *options,
                        str(server.input_dir / name)], check=True)


def probe(python: str, path: Path) -> dict:
    """pipelines.media.probe_media of ``path``, run in ComfyUI's Python (which has the pack's dependencies)."""
    result = subprocess.run([python, "-c", _PROBE_SCRIPT, str(path)], cwd=PACK_DIR, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"probe of {path} failed: {result.stderr.strip()[-600:]}")
    return json.loads(result.stdout)


def queue_prompt(server: ComfyServer, prompt: dict) -> str:
    return fetch_json(server.base_url, "/prompt", {"prompt": prompt, "client_id": CLIENT_ID})["prompt_id"]


def wait_for_history(server: ComfyServer, prompt_id: str, timeout_s: float) -> dict:
    """The /history entry of a finished (or failed, or interrupted) prompt."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        history = fetch_json(server.base_url, f"/history/{prompt_id}")
        if history and prompt_id in history:
            return history[prompt_id]
        time.sleep(0.25)
    raise RuntimeError(f"prompt {prompt_id} did not finish within {timeout_s:.0f} s")


def wait_until_running(server: ComfyServer, prompt_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = fetch_json(server.base_url, "/queue").get("queue_running", [])
        if any(item[1] == prompt_id for item in running):
            return
        time.sleep(0.1)
    raise RuntimeError(f"prompt {prompt_id} did not start within {timeout_s:.0f} s")


def history_error(entry: dict) -> str | None:
    """The error or interruption message of a history entry, or None when it succeeded."""
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_error":
            return f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_message', '').strip()}"
        if event == "execution_interrupted":
            return f"interrupted in {data.get('node_type')} (node {data.get('node_id')})"
    return None if entry.get("status", {}).get("status_str") == "success" else "unknown failure"


def saved_videos(server: ComfyServer, entry: dict) -> list[Path]:
    """Files the run's output nodes saved (SaveVideo reports them as animated "images")."""
    paths = []
    for ui in entry.get("outputs", {}).values():
        for item in ui.get("images", []):
            if item.get("type") == "output" and item.get("filename", "").endswith((".mp4", ".mkv", ".webm")):
                paths.append(server.output_dir / item.get("subfolder", "") / item["filename"])
    return paths


def check_video(python: str, path: Path, speech: dict) -> tuple[list[str], str]:
    """An output video has audio and round(speech duration × fps) frames; returns (failures, summary)."""
    info = probe(python, path)
    expected = round(speech["duration_s"] * info["fps"] + 1e-9) if info.get("fps") else None
    summary = (f"{path.name}: {info.get('width')}x{info.get('height')} {info.get('fps')} fps, "
               f"{info.get('frame_count')} frames (expected {expected}), audio {info.get('audio_codec')} "
               f"{info.get('audio_duration_s')} s")
    failures = []
    if not info.get("audio_codec"):
        failures.append(f"{path.name}: no audio stream")
    if info.get("frame_count") != expected:
        failures.append(f"{path.name}: {info.get('frame_count')} frames, expected {expected} "
                        f"(speech {speech['duration_s']:.3f} s at {info.get('fps')} fps)")
    return failures, summary


def run_workflow(server: ComfyServer, python: str, path: Path, object_info: dict, timeout_s: float) -> tuple[list[str], float]:
    """Convert, queue and wait for one workflow; check every saved video. Returns (failures, seconds)."""
    prompt = e2e_prompt(path, object_info)
    started = time.monotonic()
    entry = wait_for_history(server, queue_prompt(server, prompt), timeout_s)
    seconds = time.monotonic() - started
    error = history_error(entry)
    if error:
        return [f"{path.name}: {error}"], seconds
    fits = [e["inputs"]["name"] for e in prompt.values() if e["class_type"] == "LandmarkTalkFit"]
    for name in fits:
        files = sorted(p.name for p in (server.models_dir / MODELS_FOLDER / name).glob("*.safetensors"))
        print(f"  models/{MODELS_FOLDER}/{name}/: {files}")
        if not {"a2l.safetensors", "l2v.safetensors", "face_autoencoder.safetensors"} <= set(files):
            return [f"{path.name}: the fit wrote {files}, not a2l, l2v and face_autoencoder"], seconds
    videos = saved_videos(server, entry)
    if not videos and not fits:
        return [f"{path.name}: ran but saved no video"], seconds
    speech = probe(python, server.input_dir / SPEECH_INPUT)
    failures = []
    for video in videos:
        video_failures, summary = check_video(python, video, speech)
        print(f"  {summary}")
        failures += video_failures
    return failures, seconds


# /free only sets flags; the prompt worker applies them between prompts. Before a cancel run, give it a moment.
FREE_SETTLE_S = 3.0


def _output_files(server: ComfyServer) -> set[Path]:
    return {p for p in server.output_dir.rglob("*") if p.is_file()}


def _with_new_seeds(prompt: dict, offset: int) -> dict:
    """The prompt with every ``seed`` input moved by ``offset``, so its sampling nodes run again."""
    prompt = json.loads(json.dumps(prompt))
    for entry in prompt.values():
        if isinstance(entry["inputs"].get("seed"), int):
            entry["inputs"]["seed"] += offset
    return prompt


def _model_loads(server: ComfyServer) -> int:
    """How often ComfyUI's memory manager has loaded a model so far (its "Requested to load" log lines)."""
    return _strip_ansi(server.log_text()).count("Requested to load ")


def check_model_unloading(server: ComfyServer, path: Path, object_info: dict, timeout_s: float) -> list[str]:
    """A re-run keeps the models loaded; after POST /free {"unload_models": true} they are loaded again.

    The prompt worker applies /free's flag after the prompt it is on, or the next one if the request
    slips in just before it picks that one up; so two runs follow the request.
    """
    prompt = e2e_prompt(path, object_info)

    def run(seed_offset: int) -> str | None:
        entry = wait_for_history(server, queue_prompt(server, _with_new_seeds(prompt, seed_offset)), timeout_s)
        return history_error(entry)

    before = _model_loads(server)
    error = run(1000)
    kept = _model_loads(server) - before
    fetch_json(server.base_url, "/free", {"unload_models": True})
    error = error or run(1001) or run(1002)
    if error:
        return [f"{path.name}: {error}"]
    reloaded = _model_loads(server) - before - kept
    print(f"models: a re-run loaded {kept} model(s); after /free unload_models the next two runs loaded {reloaded}")
    failures = []
    if kept:
        failures.append(f"{path.name}: a re-run with new seeds loaded {kept} model(s) again (they should stay loaded)")
    if not reloaded:
        failures.append(f"{path.name}: after /free {{'unload_models': true}} no model was loaded again: not unloaded")
    return failures


def _wait_for_partial_file(server: ComfyServer, prompt_id: str, timeout_s: float) -> bool:
    """Wait until a streaming writer's temporary ``*.partial.*`` file in the output folder has grown (a chunk
    is on disk); False if the prompt finished or the time ran out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in server.output_dir.rglob("*.partial.*")):
            return True
        history = fetch_json(server.base_url, f"/history/{prompt_id}")
        if history and prompt_id in history:
            return False
        time.sleep(0.1)
    return False


def check_cancel(server: ComfyServer, path: Path, object_info: dict, full_run_s: float, timeout_s: float) -> list[str]:
    """POST /interrupt during a run: it reports the interruption and leaves no file, partial or whole.

    With a streaming render in the workflow the interrupt comes once its partial output file holds a
    chunk (the harshest moment for "no partial file"); otherwise half-way through the earlier run's time.
    """
    prompt = _with_new_seeds(e2e_prompt(path, object_info), 5000)
    fetch_json(server.base_url, "/free", {"free_memory": True})  # drop cached node outputs: everything runs again
    time.sleep(FREE_SETTLE_S)
    before = _output_files(server)
    prompt_id = queue_prompt(server, prompt)
    wait_until_running(server, prompt_id)
    started = time.monotonic()
    if "LandmarkTalkRender" in workflow_node_types([path]):
        moment = "once the render's partial file held a chunk" if _wait_for_partial_file(server, prompt_id, timeout_s) \
            else "(the render finished before its partial file was seen)"
    else:
        time.sleep(full_run_s / 2)
        moment = "half-way"
    interrupted_at = time.monotonic()
    fetch_json(server.base_url, "/interrupt", {"prompt_id": prompt_id})
    entry = wait_for_history(server, prompt_id, timeout_s)
    stop_s = time.monotonic() - interrupted_at
    new_files = sorted(str(p.relative_to(server.output_dir)) for p in _output_files(server) - before)
    message = history_error(entry) or "finished"
    print(f"cancel: /interrupt {moment}, {interrupted_at - started:.1f} s into the run (a full run took "
          f"{full_run_s:.1f} s) → {message}, {stop_s:.2f} s later; new output files: {new_files or 'none'}")
    failures = []
    if not message.startswith("interrupted"):
        failures.append(f"{path.name}: /interrupt did not interrupt the run ({message})")
    if new_files:
        failures.append(f"{path.name}: an interrupted run left files: {new_files}")
    return failures


def run_workflows(server: ComfyServer, python: str, media_dir: Path, object_info: dict, timeout_s: float,
                  only: list[str] | None = None) -> list[str]:
    """Run every example and test workflow whose nodes are registered (fits first, so the others can use
    their models), or those named in ``only``; check what each produced; then the memory and Cancel checks."""
    prepare_inputs(server, python, media_dir)
    runnable = []
    for path in workflow_paths():
        if only and path.stem not in only and path.name not in only:
            continue
        missing = workflow_node_types([path]) - set(object_info)
        if missing:
            print(f"workflow {path.name}: skipped, nodes not registered: {sorted(missing)}")
        else:
            runnable.append(path)
    runnable.sort(key=lambda p: "LandmarkTalkFit" not in workflow_node_types([p]))
    failures: list[str] = []
    durations: dict[Path, float] = {}
    for path in runnable:
        if "LandmarkTalkFit" not in workflow_node_types([path]):
            failures += prepare_models(server, python, workflow_model_files([path], object_info))
            object_info = fetch_json(server.base_url, "/object_info", timeout_s=120.0)  # lists new inputs and models
        workflow_failures, seconds = run_workflow(server, python, path, object_info, timeout_s)
        print(f"workflow {path.name}: {'passed' if not workflow_failures else 'FAILED'} in {seconds:.1f} s")
        failures += workflow_failures
        if workflow_failures or not workflow_node_types([path]) & SAMPLING_NODES:
            continue
        if not durations:
            # Right after its run, while its loaders' outputs are still cached (another prompt in between
            # would evict them, and their models with them).
            print(f"memory check on {path.name}:")
            failures += check_model_unloading(server, path, object_info, timeout_s)
        durations[path] = seconds
    if durations:
        # Cancel on the streaming render when it ran (it writes the file progressively), else the slowest.
        path = max(durations, key=lambda p: ("LandmarkTalkRender" in workflow_node_types([p]), durations[p]))
        print(f"cancel check on {path.name}:")
        failures += check_cancel(server, path, object_info, durations[path], timeout_s)
    else:
        print("memory and cancel checks: skipped, no sampling workflow ran")
    return failures


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", default=os.environ.get("COMFYUI_DIR"),
                        help="ComfyUI checkout (default: $COMFYUI_DIR); without it the run is skipped")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable),
                        help="Python of ComfyUI's environment (default: $COMFYUI_PYTHON or this Python)")
    parser.add_argument("--expect", action="append", metavar="NODE_ID",
                        help="expected node id (repeatable); default: every node_id written in nodes/*.py")
    parser.add_argument("--device", choices=("cpu", "auto"), default="cpu",
                        help="cpu passes --cpu to ComfyUI; auto lets it pick the GPU")
    parser.add_argument("--start-timeout", type=float, default=240.0, help="seconds to wait for the server")
    parser.add_argument("--strict", action="store_true", help="fail on style problems (category, tooltips)")
    parser.add_argument("--keep-dir", action="store_true", help="keep the scratch folder (log, outputs)")
    parser.add_argument("--run-workflows", action="store_true",
                        help="also run the example and test workflows (inputs cut from --media-dir) and check their videos")
    parser.add_argument("--workflow", action="append", metavar="NAME",
                        help="with --run-workflows: run only this workflow (file name or stem; repeatable)")
    parser.add_argument("--media-dir", default=str(PACK_DIR.parent / "shared" / "data"),
                        help="the shared test media folder (default: ../shared/data)")
    parser.add_argument("--prompt-timeout", type=float, default=900.0, help="seconds to wait for one workflow")
    parser.add_argument("--write-object-info", metavar="PATH",
                        help=f"write the /object_info snapshot the offline workflow tests use (ours: {SNAPSHOT_PATH.relative_to(PACK_DIR)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if not args.comfyui_dir:
        print("skipped: COMFYUI_DIR not set (give --comfyui-dir or set COMFYUI_DIR to a ComfyUI checkout)")
        return 0
    comfyui_dir = Path(args.comfyui_dir).expanduser().resolve()
    expected = args.expect if args.expect is not None else expected_node_ids()
    work_dir = Path(tempfile.mkdtemp(prefix="comfy_e2e_"))
    try:
        link = link_pack(comfyui_dir)
        print(f"pack linked: {link} -> {os.readlink(link) if link.is_symlink() else link}")
        with ComfyServer(comfyui_dir, args.python, work_dir, device=args.device) as server:
            print(f"starting: {' '.join(server.command())}")
            started = time.monotonic()
            server.start(args.start_timeout)
            print(f"ComfyUI answered on {server.base_url} after {time.monotonic() - started:.1f} s")
            try:
                failures, object_info = check_pack(server, expected, args.strict)
                if args.write_object_info:
                    version = fetch_json(server.base_url, "/system_stats")["system"]["comfyui_version"]
                    snapshot = object_info_snapshot(object_info, workflow_node_types(workflow_paths()), version)
                    Path(args.write_object_info).write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n",
                                                            encoding="utf-8")
                    print(f"/object_info snapshot of {len(snapshot) - 1} node types written to {args.write_object_info}")
                if args.run_workflows and not failures:
                    failures += run_workflows(server, args.python, Path(args.media_dir), object_info, args.prompt_timeout,
                                              only=args.workflow)
            except (RuntimeError, OSError, ValueError) as exc:  # a route failed or answered non-JSON
                failures = [f"{type(exc).__name__}: {exc}"]
            if failures:
                print(f"server log tail:\n{server.log_tail()}")
        print(f"server stopped (exit code {server.process.returncode})")
    except E2EError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep_dir:
            print(f"scratch folder kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    for failure in failures:
        print(f"FAILED: {failure}")
    print("e2e: passed" if not failures else f"e2e: {len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
