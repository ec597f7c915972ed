"""The pack's entry point, as ComfyUI calls it: every node module loads, schemas follow STYLE.md §4."""
from __future__ import annotations

import asyncio
import logging

import pytest

from comfy_harness import SKIP_REASON, comfy_available, load_pack, pack_module

pytestmark = pytest.mark.skipif(not comfy_available(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def node_classes():
    extension = asyncio.run(load_pack().comfy_entrypoint())
    asyncio.run(extension.on_load())
    return asyncio.run(extension.get_node_list())


def test_every_stage_module_loads(node_classes, caplog):
    nodes = pack_module("nodes")
    with caplog.at_level(logging.WARNING):
        classes = nodes.load_node_classes()
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()], caplog.text
    assert [c.define_schema().node_id for c in classes] == [c.define_schema().node_id for c in node_classes]


def test_node_ids_are_unique_and_written_in_the_source(node_classes):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import comfy_e2e

    ids = [c.define_schema().node_id for c in node_classes]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == comfy_e2e.expected_node_ids()


def test_schemas_follow_the_style_guide(node_classes):
    categories = {f"LandmarkTalk/{c}" for c in ("loaders", "audio", "landmarks", "sampling", "refine", "video")}
    for cls in node_classes:
        schema = cls.define_schema()
        schema.validate()
        assert schema.node_id.startswith("LandmarkTalk") and schema.display_name, schema.node_id
        assert schema.category in categories, f"{schema.node_id}: category {schema.category}"
        assert schema.description and "\n" not in schema.description, f"{schema.node_id}: one-line description"
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"


def test_a_broken_stage_module_is_logged_and_skipped(caplog):
    nodes = pack_module("nodes")
    with caplog.at_level(logging.WARNING):
        classes = nodes.load_node_classes(("video", "no_such_stage"))
    assert [c.define_schema().node_id for c in classes] == ["LandmarkTalkMatchFramesToAudio"]
    assert "no_such_stage nodes are unavailable" in caplog.text


def test_models_folder_is_registered_for_safetensors_only(node_classes):
    import folder_paths

    paths, extensions = folder_paths.folder_names_and_paths["landmarktalk"]
    assert extensions == {".safetensors"} and any(p.endswith("landmarktalk") for p in paths)
