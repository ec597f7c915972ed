"""Workflows fit the nodes: every example workflow is checked offline against a committed /object_info snapshot.

The snapshot (tests/data/object_info_landmarktalk.json) holds our nodes' /object_info entries and the core
entries the workflows use. ``test_snapshot_matches_comfyui`` regenerates it from a real ComfyUI (only when
COMFYUI_DIR is set) so it cannot silently drift from the code. Regenerate it after changing a node:

    python scripts/comfy_e2e.py --comfyui-dir $COMFYUI_DIR --python $COMFYUI_PYTHON \
        --write-object-info tests/data/object_info_landmarktalk.json
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import comfy_e2e  # noqa: E402

SNAPSHOT_PATH = comfy_e2e.SNAPSHOT_PATH
WORKFLOWS = comfy_e2e.workflow_paths()
SAMPLE_WORKFLOW = REPO_ROOT / "tests" / "data" / "workflow_match_frames_to_audio.json"


@pytest.fixture(scope="module")
def snapshot() -> dict:
    return json.loads(SNAPSHOT_PATH.read_text(encoding="utf-8"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_snapshot_lists_every_node_written_in_nodes(snapshot):
    written = set(comfy_e2e.expected_node_ids())
    in_snapshot = {name for name in snapshot if name.startswith("LandmarkTalk")}
    assert written == in_snapshot, (
        f"nodes/*.py and the snapshot disagree: only in code {sorted(written - in_snapshot)}, only in snapshot "
        f"{sorted(in_snapshot - written)}; regenerate it (see this file's docstring)"
    )


def test_snapshot_holds_every_node_type_the_workflows_use(snapshot):
    missing = comfy_e2e.workflow_node_types(WORKFLOWS) - set(snapshot)
    assert not missing, f"workflows use node types the snapshot lacks: {sorted(missing)}; regenerate it"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_fits_object_info(path, snapshot):
    problems = comfy_e2e.validate_workflow(_load(path), snapshot)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_converts_to_a_prompt_with_every_node(path, snapshot):
    workflow = _load(path)
    prompt = comfy_e2e.workflow_to_prompt(workflow, snapshot)
    runnable = [n for n in workflow["nodes"] if n["type"] not in comfy_e2e.FRONTEND_ONLY_NODES]
    assert sorted(prompt) == sorted(str(n["id"]) for n in runnable)
    assert any(entry["class_type"].startswith("LandmarkTalk") for entry in prompt.values())
    assert any(snapshot[entry["class_type"]].get("output_node") for entry in prompt.values()), "nothing is saved"


def test_conversion_maps_widgets_links_and_dynamic_combos(snapshot):
    prompt = comfy_e2e.workflow_to_prompt(_load(SAMPLE_WORKFLOW), snapshot)
    by_type = {entry["class_type"]: (node_id, entry) for node_id, entry in prompt.items()}
    _, match = by_type["LandmarkTalkMatchFramesToAudio"]
    components_id, _ = by_type["GetVideoComponents"]
    # fps is a widget driven by a link: the link wins, the widget's slot is still consumed.
    assert match["inputs"]["fps"] == [components_id, 2]
    assert match["inputs"]["length_mode"] == "pingpong"
    _, save = by_type["SaveVideo"]
    assert save["inputs"]["format"] == "auto" and save["inputs"]["format.codec"] == "auto"
    assert "codec" not in save["inputs"]  # the hidden legacy input has no widget
    _, load_audio = by_type["LoadAudio"]
    assert load_audio["inputs"] == {"audio": "landmarktalk_speech.wav"}  # upload extras dropped


def _node(workflow: dict, node_type: str) -> dict:
    return next(n for n in workflow["nodes"] if n["type"] == node_type)


def _corruptions():
    def extra_widget(w):
        _node(w, "LandmarkTalkMatchFramesToAudio")["widgets_values"].append(3)

    def missing_widget(w):
        _node(w, "CreateVideo")["widgets_values"].pop()

    def renamed_input(w):
        _node(w, "LandmarkTalkMatchFramesToAudio")["inputs"][0]["name"] = "frames"

    def wrong_link_type(w):
        link = next(l for l in w["links"] if l[5] == "AUDIO")
        link[5] = "IMAGE"

    def unknown_node(w):
        _node(w, "CreateVideo")["type"] = "CreateVideoTypo"

    def bad_combo_value(w):
        _node(w, "LandmarkTalkMatchFramesToAudio")["widgets_values"][-1] = "bounce"

    def value_out_of_range(w):
        _node(w, "CreateVideo")["widgets_values"][1] = 12  # bit_depth max is 10

    def unconnected_socket(w):
        node = _node(w, "LandmarkTalkMatchFramesToAudio")
        slot = next(s for s in node["inputs"] if s["name"] == "audio")
        w["links"] = [l for l in w["links"] if l[0] != slot["link"]]
        slot["link"] = None

    return [extra_widget, missing_widget, renamed_input, wrong_link_type, unknown_node, bad_combo_value,
            value_out_of_range, unconnected_socket]


@pytest.mark.parametrize("corrupt", _corruptions(), ids=lambda f: f.__name__)
def test_validator_catches_a_broken_workflow(corrupt, snapshot):
    workflow = _load(SAMPLE_WORKFLOW)
    assert not comfy_e2e.validate_workflow(workflow, snapshot)
    broken = copy.deepcopy(workflow)
    corrupt(broken)
    assert comfy_e2e.validate_workflow(broken, snapshot), f"{corrupt.__name__} went unnoticed"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"), reason="COMFYUI_DIR not set: the snapshot is compared "
                    "with a real ComfyUI only when one is given (set COMFYUI_DIR and COMFYUI_PYTHON)")
def test_snapshot_matches_comfyui(tmp_path, snapshot):
    fresh_path = tmp_path / "object_info.json"
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "comfy_e2e.py"), "--comfyui-dir", os.environ["COMFYUI_DIR"],
         "--python", python, "--write-object-info", str(fresh_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0 and fresh_path.is_file(), result.stdout[-3000:] + result.stderr[-2000:]
    fresh = json.loads(fresh_path.read_text(encoding="utf-8"))
    ours = sorted(name for name in set(fresh) | set(snapshot) if name.startswith("LandmarkTalk"))
    drifted = [name for name in ours if fresh.get(name) != snapshot.get(name)]
    assert not drifted, f"our nodes' /object_info changed: {drifted}; regenerate the snapshot (see this file's docstring)"
    if fresh["_comfyui_version"] != snapshot["_comfyui_version"]:
        pytest.skip(f"core node entries not compared: ComfyUI {fresh['_comfyui_version']} here, snapshot from "
                    f"{snapshot['_comfyui_version']}")
    assert fresh == snapshot, "core node entries differ from the snapshot's; regenerate it"
