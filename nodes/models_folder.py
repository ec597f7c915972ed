"""The pack's model folder, ``models/landmarktalk/``, registered with ComfyUI's ``folder_paths``."""
from __future__ import annotations

import os

import folder_paths

FOLDER_NAME = "landmarktalk"

__all__ = ["FOLDER_NAME", "register_models_folder", "list_model_files", "resolve_model_file"]


def register_models_folder() -> None:
    """Add models/landmarktalk (keeping users' extra paths) and make it list .safetensors files."""
    path = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    folder_paths.add_model_folder_path(FOLDER_NAME, path)
    paths, extensions = folder_paths.folder_names_and_paths[FOLDER_NAME]
    # A folder name new to folder_paths starts with an empty extension filter, which lists nothing.
    folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, set(extensions) | {".safetensors"})


def list_model_files() -> list[str]:
    return folder_paths.get_filename_list(FOLDER_NAME)


def resolve_model_file(name: str) -> str:
    return folder_paths.get_full_path_or_raise(FOLDER_NAME, name)
