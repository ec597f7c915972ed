"""The pack's model folder, ``models/landmarktalk/``, registered with ComfyUI's ``folder_paths``."""
from __future__ import annotations

import logging
import os

import folder_paths

from ..pipelines.checkpoint import read_checkpoint_metadata
from ..pipelines.errors import LandmarkTalkError

FOLDER_NAME = "landmarktalk"

__all__ = ["FOLDER_NAME", "SPEECH_ENCODER_FOLDER", "register_models_folder", "list_model_files", "resolve_model_file",
           "model_folder", "list_speech_encoders", "resolve_speech_encoder"]

SPEECH_ENCODER_FOLDER = "speech_encoders"  # models/landmarktalk/speech_encoders/NAME/config.json + weights

logger = logging.getLogger(__name__)


def register_models_folder() -> None:
    """Add models/landmarktalk (keeping users' extra paths) and make it list .safetensors files only."""
    path = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    folder_paths.add_model_folder_path(FOLDER_NAME, path)
    paths, extensions = folder_paths.folder_names_and_paths[FOLDER_NAME]
    # A folder name new to folder_paths starts with an empty extension filter, which lists every file.
    folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, set(extensions) | {".safetensors"})


def list_model_files(kind: str | None = None) -> list[str]:
    """Checkpoint names in the folder; with ``kind``, only those whose header says that kind.

    Only the safetensors header is read, so this is cheap enough for ``define_schema`` (re-run on
    every /object_info, i.e. when the user presses R).
    """
    names = folder_paths.get_filename_list(FOLDER_NAME)
    if kind is None:
        return names
    kept = []
    for name in names:
        path = folder_paths.get_full_path(FOLDER_NAME, name)
        try:
            if path and read_checkpoint_metadata(path).get("landmarktalk.kind") == kind:
                kept.append(name)
        except (LandmarkTalkError, OSError) as exc:
            logger.debug("models/%s/%s skipped: %s", FOLDER_NAME, name, exc)
    return kept


def resolve_model_file(name: str, input_name: str = "model_name") -> str:
    """Full path of ``name`` in the folder, or a FileNotFoundError that says where to put it."""
    path = folder_paths.get_full_path(FOLDER_NAME, name) if name else None
    if path is None:
        folders = ", ".join(folder_paths.get_folder_paths(FOLDER_NAME)) or f"models/{FOLDER_NAME}"
        raise FileNotFoundError(
            f"{input_name}: {name!r} is not in models/{FOLDER_NAME}/ ({folders}); copy the checkpoint there "
            "(or train one with `python -m pipelines fit`) and press R to refresh the list"
        )
    return path


def model_folder() -> str:
    """The first models/landmarktalk folder: where optional backend weights (dlib, FAN) are looked for."""
    return folder_paths.get_folder_paths(FOLDER_NAME)[0]


def list_speech_encoders() -> list[str]:
    """Names of the save_pretrained folders (with a config.json) in models/landmarktalk/speech_encoders/."""
    names = set()
    for root in folder_paths.get_folder_paths(FOLDER_NAME):
        folder = os.path.join(root, SPEECH_ENCODER_FOLDER)
        if os.path.isdir(folder):
            names.update(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n, "config.json")))
    return sorted(names)


def resolve_speech_encoder(name: str) -> str:
    """The folder of speech encoder ``name``, or a FileNotFoundError that says where to put it."""
    for root in folder_paths.get_folder_paths(FOLDER_NAME):
        folder = os.path.join(root, SPEECH_ENCODER_FOLDER, name) if name else ""
        if name and os.path.isfile(os.path.join(folder, "config.json")):
            return folder
    raise FileNotFoundError(
        f"encoder_name: {name!r} is not in models/{FOLDER_NAME}/{SPEECH_ENCODER_FOLDER}/; copy the whole "
        f"save_pretrained folder (config.json + weights) there as models/{FOLDER_NAME}/{SPEECH_ENCODER_FOLDER}/"
        f"{name or 'NAME'}/ and press R to refresh the list"
    )
