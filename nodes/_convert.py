"""ComfyUI values ↔ engine types, model loading into ComfyUI's memory manager, and node progress.

Every node goes through these helpers so the conversions are written (and tested) once:

- IMAGE float32 [B,H,W,C] 0..1 ↔ frames uint8 [T,H,W,3] (``image_to_frames`` / ``frames_to_image``);
- AUDIO ``{"waveform": [B,C,N], "sample_rate"}`` ↔ :class:`pipelines.types.Audio` (``audio_from_comfy`` /
  ``audio_to_comfy``);
- a checkpoint in ``models/landmarktalk/`` → a ``ModelPatcher`` (``load_model_patcher``), and patchers
  loaded onto the compute device (``models_on_device``);
- ``NodeProgress``: the progress callback handed to the engine (progress bar + Cancel).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import numpy as np
import torch

from ..pipelines.checkpoint import load_checkpoint
from ..pipelines.errors import LandmarkTalkError
from ..pipelines.types import Audio
from .models_folder import resolve_model_file

__all__ = [
    "image_to_frames", "frames_to_image", "audio_from_comfy", "audio_to_comfy",
    "frame_chunks", "map_frame_chunks", "to_model_images", "CodecHandle", "patch_module", "video_to_file", "input_files", "input_file_path", "output_file_path", "load_model_patcher", "models_on_device", "compute_dtype", "NodeProgress",
]

logger = logging.getLogger(__name__)

# Frames converted per step: bounds the float temporary of a long batch to ~64 frames.
_CONVERT_CHUNK = 64


def image_to_frames(image: torch.Tensor, name: str = "image") -> np.ndarray:
    """IMAGE [B,H,W,C] (or one [H,W,C]) float 0..1 → uint8 RGB frames [B,H,W,3]; alpha dropped, grey expanded."""
    if not isinstance(image, torch.Tensor):
        raise LandmarkTalkError(f"{name}: expected an IMAGE tensor, got {type(image).__name__}; connect an image output")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4) or image.shape[0] == 0:
        raise LandmarkTalkError(
            f"{name}: IMAGE must be [B,H,W,C] with C = 1, 3 or 4 and B ≥ 1, got {tuple(image.shape)}"
        )
    frames = np.empty((*image.shape[:3], 3), dtype=np.uint8)
    for start in range(0, image.shape[0], _CONVERT_CHUNK):
        chunk = image[start:start + _CONVERT_CHUNK, ..., :3].float()
        chunk = chunk.expand(*chunk.shape[:3], 3) if chunk.shape[-1] == 1 else chunk
        frames[start:start + chunk.shape[0]] = chunk.clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return frames


def frames_to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames [T,H,W,3] (or one [H,W,3]) → IMAGE float [T,H,W,3] 0..1 on ComfyUI's intermediate device."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise LandmarkTalkError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {tuple(frames.shape)}")
    image = torch.empty(frames.shape, dtype=comfy.model_management.intermediate_dtype(),
                        device=comfy.model_management.intermediate_device())
    for start in range(0, frames.shape[0], _CONVERT_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(frames[start:start + _CONVERT_CHUNK]))
        image[start:start + chunk.shape[0]] = chunk.to(image.device, torch.float32).div_(255)
    return image


def frame_chunks(frames: np.ndarray, chunk_frames: int = 16):
    """Frames as consecutive chunks, for engine functions that report progress (and Cancel) per chunk."""
    return (frames[start:start + chunk_frames] for start in range(0, len(frames), chunk_frames))


def map_frame_chunks(function, frames: np.ndarray, chunk_frames: int = 16) -> np.ndarray:
    """``function(chunk, start)`` over consecutive chunks of ``frames``, concatenated, with progress and Cancel
    between chunks (for per-frame engine functions that take a ``start`` offset, such as align/paste)."""
    progress = NodeProgress(total=len(frames))
    out = []
    for start in range(0, len(frames), chunk_frames):
        out.append(function(frames[start:start + chunk_frames], start))
        progress(start + len(out[-1]), len(frames))
    return np.concatenate(out)


def audio_from_comfy(audio: dict, name: str = "audio") -> Audio:
    """AUDIO ``{"waveform": [B,C,N], "sample_rate"}`` → Audio [C,N] float32; a batch uses its first item."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise LandmarkTalkError(f"{name}: expected an AUDIO value with 'waveform' and 'sample_rate'; connect Load Audio")
    waveform = torch.as_tensor(audio["waveform"])
    if waveform.ndim == 2:
        waveform = waveform[None]
    if waveform.ndim != 3 or waveform.shape[-1] == 0:
        raise LandmarkTalkError(f"{name}: waveform must be [B,C,N] with N > 0 samples, got {tuple(waveform.shape)}")
    if waveform.shape[0] > 1:
        logger.warning("%s: a batch of %d audio clips; using the first", name, waveform.shape[0])
    sample_rate = int(audio["sample_rate"])
    if sample_rate <= 0:
        raise LandmarkTalkError(f"{name}: sample_rate {sample_rate} is not a positive rate in Hz")
    samples = waveform[0].detach().to("cpu", torch.float32).numpy()
    return Audio(samples=np.ascontiguousarray(samples), sample_rate=sample_rate)


def audio_to_comfy(audio: Audio) -> dict:
    """Audio [C,N] → AUDIO ``{"waveform": [1,C,N] float32, "sample_rate": int}``."""
    waveform = torch.from_numpy(np.ascontiguousarray(audio.samples, dtype=np.float32))
    return {"waveform": waveform[None], "sample_rate": int(audio.sample_rate)}


def input_files(content_types: list[str]) -> list[str]:
    """Files of the given kinds ("video", "image", "audio") in ComfyUI's input folder, for upload combos."""
    folder = folder_paths.get_input_directory()
    names = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))] if os.path.isdir(folder) else []
    return sorted(folder_paths.filter_files_content_types(names, content_types))


def input_file_path(name: str, input_name: str) -> str:
    """Full path of an input-folder file chosen in a combo, or a FileNotFoundError naming the input."""
    if not name or not folder_paths.exists_annotated_filepath(name):
        raise FileNotFoundError(f"{input_name}: {name!r} is not in ComfyUI's input folder; upload it or pick another")
    return folder_paths.get_annotated_filepath(name)


def output_file_path(filename_prefix: str, suffix: str) -> tuple[str, str, str]:
    """(full path, file name, subfolder) of a new output file; the counter never reuses an existing name."""
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                           folder_paths.get_output_directory())
    filename = f"{name}_{counter:05}_{suffix}"
    return os.path.join(folder, filename), filename, subfolder


def video_to_file(video, folder: str | os.PathLike, stem: str) -> str:
    """Write a VIDEO value (Load Video, Create Video) to ``folder/stem.mp4`` for engine functions that read files."""
    path = os.path.join(folder, f"{stem}.mp4")
    video.save_to(path)
    return path


@dataclass(frozen=True)
class CodecHandle:
    """The LT_LATENT_CODEC value: a :class:`pipelines.latents.LatentCodec` and the patcher managing its module."""

    codec: object
    patcher: comfy.model_patcher.ModelPatcher


def patch_module(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher (weights on the CPU until loaded) for an engine module, frozen for inference."""
    module.eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(
        module,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def load_model_patcher(model_name: str, kind: str, input_name: str = "model_name") -> comfy.model_patcher.ModelPatcher:
    """Load the ``kind`` checkpoint ``model_name`` from models/landmarktalk into a ModelPatcher (weights on CPU).

    The patcher lets ComfyUI move the model to the GPU when a node needs it and offload it under
    memory pressure or on ``/free``.
    """
    path = resolve_model_file(model_name, input_name)
    try:
        model = load_checkpoint(path, kind)
    except LandmarkTalkError as exc:
        raise LandmarkTalkError(f"{input_name}: {exc}") from exc
    return patch_module(model)


def models_on_device(*patchers, memory_required: int = 0) -> torch.device:
    """Ask ComfyUI to load the patchers' modules fully onto the compute device (all at once, so loading
    one cannot evict another); returns that device. Use ``patcher.model`` afterwards.

    ``force_full_load``: partial (lowvram) loading only moves comfy.ops layers, so plain torch layers
    would be left behind on the CPU.
    """
    comfy.model_management.load_models_gpu(list(patchers), memory_required=memory_required, force_full_load=True)
    return patchers[0].load_device


def to_model_images(image: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """IMAGE [B,H,W,C] 0..1 → [B,3,size,size] in -1..1 on ``device`` (antialiased resize when needed)."""
    images = image[..., :3].movedim(-1, 1).to(device, torch.float32)
    if images.shape[-2:] != (size, size):
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return images.clamp(0, 1).mul(2).sub(1)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that run it well, else float32 (CPU always float32)."""
    if comfy.model_management.is_device_cpu(device):
        return torch.float32
    return torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float32


class NodeProgress:
    """Progress callback for the engine, ``(done, total, *extra)``: moves the node's bar and honours Cancel.

    Cancel raises ``comfy.model_management.InterruptProcessingException`` (a BaseException, so engine
    ``except Exception`` blocks don't swallow it); the engine's atomic writers then leave no partial file.
    """

    def __init__(self, total: int = 0) -> None:
        self._total = total  # used when the engine reports 0 (a stream of unknown length)
        self._bar: comfy.utils.ProgressBar | None = None

    def __call__(self, done: int, total: int = 0, *extra) -> None:
        # ComfyUI's own hook checks for Cancel only on throttled updates: check on every call.
        comfy.model_management.throw_exception_if_processing_interrupted()
        total = total or self._total or max(done, 1)
        if self._bar is None:
            self._bar = comfy.utils.ProgressBar(total)
        self._bar.update_absolute(done, total)
