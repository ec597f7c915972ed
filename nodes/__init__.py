"""V3 ComfyUI nodes: thin adapters from ComfyUI types to ``pipelines`` calls."""
from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

logger = logging.getLogger(__name__)

__all__ = ["LandmarkTalkExtension"]


def _node_modules():
    # Each stage's nodes live in their own module and list themselves in NODES.
    from . import models_folder  # registers models/landmarktalk with folder_paths

    models_folder.register_models_folder()
    modules = []
    for name in ():
        try:
            modules.append(__import__(f"{__name__}.{name}", fromlist=["NODES"]))
        except ImportError:
            logger.warning("LandmarkTalk: %s nodes unavailable", name, exc_info=True)
    return modules


class LandmarkTalkExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in _node_modules() for node in module.NODES]
