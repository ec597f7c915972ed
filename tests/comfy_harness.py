"""Import the pack the way ComfyUI does, against a real ComfyUI checkout named by ``COMFYUI_DIR``.

ComfyUI imports a custom node pack as a package named after its folder path, so the nodes' relative
imports (``from ..pipelines.media import ...``) only work when the repository root is imported as a
package. :func:`load_pack` does that under the name ``landmarktalk_pack`` after putting the ComfyUI
checkout on ``sys.path`` in CPU mode (``comfy.model_management`` needs CUDA unless ``args.cpu`` is set
before its import). Node tests call ``Node.execute(...)`` directly with ComfyUI-shaped values.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "landmarktalk_pack"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
SKIP_REASON = (
    "COMFYUI_DIR is not set: node tests need a ComfyUI checkout and a Python that can import it, e.g. "
    "COMFYUI_DIR=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_nodes_*.py"
)


def comfy_available() -> bool:
    return bool(COMFYUI_DIR) and (Path(COMFYUI_DIR) / "comfy_api").is_dir()


def _import_comfy() -> None:
    comfyui_dir = str(Path(COMFYUI_DIR).resolve())
    if comfyui_dir not in sys.path:
        sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu, or it asks CUDA for a device)


def load_pack():
    """The repository imported as the package ``landmarktalk_pack`` (ComfyUI importable, CPU mode)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    _import_comfy()
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    spec.loader.exec_module(pack)
    return pack


def pack_module(name: str):
    """A submodule of the pack, e.g. ``pack_module("nodes.video")`` or ``pack_module("pipelines.types")``."""
    load_pack()
    return importlib.import_module(f"{PACK_NAME}.{name}")


def use_scratch_folders(tmp_path: Path) -> Path:
    """Point ComfyUI's input/temp/output folders and models/landmarktalk at ``tmp_path``; returns the models folder."""
    models_folder = pack_module("nodes.models_folder")
    import folder_paths

    for name in ("input", "temp", "output", "models"):
        (tmp_path / name).mkdir(exist_ok=True)
    folder_paths.set_input_directory(str(tmp_path / "input"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    folder_paths.set_output_directory(str(tmp_path / "output"))
    models_dir = tmp_path / "models"
    folder_paths.folder_names_and_paths[models_folder.FOLDER_NAME] = ([str(models_dir)], {".safetensors"})
    folder_paths.filename_list_cache.pop(models_folder.FOLDER_NAME, None)
    return models_dir


def comfy_audio(samples, sample_rate: int) -> dict:
    """An AUDIO value as Load Audio makes it: waveform [1, C, N] float32."""
    import torch

    waveform = torch.as_tensor(samples, dtype=torch.float32)
    if waveform.ndim == 1:
        waveform = waveform[None]
    return {"waveform": waveform[None], "sample_rate": sample_rate}
