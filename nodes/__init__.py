"""V3 ComfyUI nodes: thin adapters from ComfyUI types to ``pipelines`` calls.

Each stage's nodes live in their own module and list themselves in ``NODES``. A module that fails to
import (a missing optional dependency, a broken install) is logged with its traceback and left out, so
the rest of the pack still loads.
"""
from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

logger = logging.getLogger(__name__)

__all__ = ["LandmarkTalkExtension", "NODE_MODULES", "load_node_classes"]

# Stage modules in menu order; each exposes NODES (a list of io.ComfyNode classes).
NODE_MODULES = ("loaders", "audio", "face", "landmarks", "sampling", "refine", "video", "render", "fit", "evaluate",
                "dae")


def load_node_classes(modules: tuple[str, ...] = NODE_MODULES) -> list[type[io.ComfyNode]]:
    """The node classes of every stage module that imports; broken modules are logged and skipped."""
    nodes: list[type[io.ComfyNode]] = []
    seen: dict[str, str] = {}
    for name in modules:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception:  # noqa: BLE001 — one broken stage must not take the whole pack down
            logger.warning("LandmarkTalk: the %s nodes are unavailable (import failed)", name, exc_info=True)
            continue
        for node in module.NODES:
            node_id = node.define_schema().node_id
            if node_id in seen:
                logger.error("LandmarkTalk: node id %s defined in both %s and %s; keeping the first",
                             node_id, seen[node_id], name)
                continue
            seen[node_id] = name
            nodes.append(node)
    return nodes


class LandmarkTalkExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        from .models_folder import register_models_folder

        register_models_folder()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return load_node_classes()
