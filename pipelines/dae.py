"""The DAE-Talker path (Du et al. 2023): fit, render and self-evaluate a diffusion-autoencoder talking head.

- :func:`estimate_head_pose`: yaw/pitch/roll per frame from 68 landmarks (OpenCV ``solvePnP`` on a
  generic 3D face built from the pack's mean 2D face and a head-shaped depth profile).
- :func:`invert_crops` / :func:`decode_latents`: deterministic DDIM (η = 0) inversion of a reference
  crop to its stochastic code ``x_T``, and decoding of a ``z_sem`` sequence with that same ``x_T`` for
  every frame (DAE-Talker's way to make per-frame decoding temporally consistent). Both run on the
  DDIM scheduler's σ grid from :func:`pipelines.sampling.make_scheduler`; decoding is
  :func:`pipelines.sampling.sample_latents`, inversion is the same Euler step run upwards in σ.
- :func:`render_dae_frames`: speech + pose + reference crop → crops, chunk by chunk.
- :func:`fit_dae` trains ``dae.safetensors`` then ``speech2latent.safetensors`` on one clip;
  :func:`evaluate_dae_holdout` renders the held-out tail from its own audio and pose and scores it
  (PSNR, SSIM, M-LMD) beside the still baseline and the DAE's own reconstruction.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import LandmarkTalkError
from .types import Audio

__all__ = ["estimate_head_pose", "pose_curve", "fill_pose_gaps", "invert_crops", "decode_latents", "encode_semantic_latents",
           "predict_semantic_latents", "decode_semantic_latents", "render_dae_frames", "render_dae_video", "fit_dae",
           "evaluate_dae_holdout"]

logger = logging.getLogger(__name__)

DAE_FILE = "dae.safetensors"
SPEECH2LATENT_FILE = "speech2latent.safetensors"
DAE_RECORD = "dae_fit.json"

# ----------------------------------------------------------------------------------------- head pose

# Depth (towards the camera, template units) of the nose ridge 27–30 and the nostrils 31–35 above the
# head surface: what makes yaw visible as the nose sliding across the face.
_NOSE_LIFT = {27: 0.02, 28: 0.045, 29: 0.07, 30: 0.09, 31: 0.035, 32: 0.05, 33: 0.06, 34: 0.05, 35: 0.035}
_HEAD_RADIUS = 0.3  # template units; the mean face is ~0.5 wide


def _generic_face_3d() -> np.ndarray:
    """[68, 3] points (x right, y down, z away from the camera) in template units, centred on the face."""
    from .face._geometry import TEMPLATE

    x, y = TEMPLATE[:, 0] - 0.5, TEMPLATE[:, 1] - 0.55
    # The head as a vertical cylinder of radius _HEAD_RADIUS: points away from the midline sit further back.
    back = _HEAD_RADIUS - np.sqrt(np.maximum(_HEAD_RADIUS ** 2 - x ** 2, 0.0))
    lift = np.zeros(68)
    for index, value in _NOSE_LIFT.items():
        lift[index] = value
    lift[36:48] -= 0.015  # eyes sit in their sockets
    lift[48:68] += 0.01  # lips stand out a little
    return np.stack([x, y, back - lift], axis=1)


def estimate_head_pose(landmarks: np.ndarray) -> np.ndarray:
    """[T, 68, 2] (or [68, 2]) landmarks in any pixel frame → [T, 3] (yaw, pitch, roll) in radians.

    Signs in image terms: yaw > 0 turns the nose towards +x (image right), pitch > 0 tips the nose
    down (+y), roll > 0 turns the face clockwise. Aligned crops have most roll removed by alignment;
    yaw and pitch survive it. NaN rows (no face) give NaN poses.
    """
    import cv2

    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise LandmarkTalkError(f"landmarks: expected [T, 68, 2] (iBUG order), got shape {points.shape}")
    model = _generic_face_3d()
    poses = np.full((len(points), 3), np.nan)
    for t, frame in enumerate(points):
        if not np.isfinite(frame).all():
            continue
        centre = frame.mean(axis=0)
        width = float(np.ptp(frame[:, 0])) or 1.0
        focal = 6.0 * width  # a long lens: nearly orthographic, so translation does not leak into rotation
        camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], dtype=np.float64)
        distance = focal * float(np.ptp(model[:, 0])) / width
        rvec, tvec = np.zeros((3, 1)), np.array([[0.0], [0.0], [distance]])
        ok, rvec, tvec = cv2.solvePnP(model, frame, camera, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            continue
        r = cv2.Rodrigues(rvec)[0]
        # r = Rz(roll) Ry(yaw) Rx(pitch) in OpenCV's camera axes (x right, y down, z forward).
        yaw = math.asin(float(np.clip(-r[2, 0], -1.0, 1.0)))
        pitch = math.atan2(r[2, 1], r[2, 2])
        roll = math.atan2(r[1, 0], r[0, 0])
        # The nose points to -z; a positive Ry angle moves it to -x, so flip yaw to "towards +x".
        poses[t] = (-yaw, pitch, roll)
    return poses.astype(np.float32)


_CURVE_LINE = re.compile(r"^\s*(yaw|pitch|roll)\s*[:=]\s*(.+?)\s*$", re.IGNORECASE)


def fill_pose_gaps(pose: np.ndarray) -> np.ndarray:
    """NaN rows (frames without a face) take the linear interpolation of their neighbours (0 if none)."""
    pose = np.array(pose, np.float32)
    index = np.arange(len(pose))
    for axis in range(pose.shape[1]):
        bad = ~np.isfinite(pose[:, axis])
        if bad.all():
            pose[:, axis] = 0.0
        elif bad.any():
            pose[bad, axis] = np.interp(index[bad], index[~bad], pose[~bad, axis])
    return pose


def pose_curve(text: str, num_frames: int, fps: float, *, base: np.ndarray | None = None) -> np.ndarray:
    """Parse a pose-curve string into [num_frames, 3] radians.

    One line per angle, in degrees: ``yaw: sin AMPLITUDE PERIOD_S [OFFSET]`` for a sinusoid, or
    ``yaw: v0, v1, ...`` for key values spread evenly over the clip (linear in between; one value holds
    still). Angles not given come from ``base`` ([N, 3] radians, e.g. a driving video's pose: cut to
    the speech, or held on its last frame when shorter; gaps filled) or are 0.
    """
    if base is None or len(base) == 0:
        pose = np.zeros((num_frames, 3), np.float64)
    else:
        base = fill_pose_gaps(base)
        if len(base) < num_frames:
            logger.info("pose: the driving pose has %d frames, the speech %d; holding its last frame",
                        len(base), num_frames)
            base = np.concatenate([base, np.repeat(base[-1:], num_frames - len(base), axis=0)])
        pose = np.array(base[:num_frames], np.float64)
    t = np.arange(num_frames) / float(fps)
    for line in filter(str.strip, text.splitlines()):
        match = _CURVE_LINE.match(line)
        if not match:
            raise LandmarkTalkError(f"pose curve line {line!r}: write 'yaw: sin 10 2.0' or 'yaw: 0, 10, -10' "
                                    "(degrees; angles yaw, pitch, roll)")
        axis = ("yaw", "pitch", "roll").index(match.group(1).lower())
        spec = match.group(2).strip()
        try:
            if spec.lower().startswith("sin"):
                args = [float(v) for v in spec[3:].replace(",", " ").split()]
                if not 2 <= len(args) <= 3 or args[1] <= 0:
                    raise ValueError
                amplitude, period, offset = (args + [0.0])[:3]
                values = offset + amplitude * np.sin(2 * np.pi * t / period)
            else:
                keys = [float(v) for v in spec.split(",")]
                values = np.interp(np.linspace(0, 1, num_frames), np.linspace(0, 1, len(keys)), keys)
        except ValueError:
            raise LandmarkTalkError(f"pose curve line {line!r}: 'sin AMPLITUDE PERIOD_S [OFFSET]' (period > 0) "
                                    "or comma-separated degrees") from None
        pose[:, axis] = np.radians(values)
    return pose.astype(np.float32)


# ----------------------------------------------------------------------------------------- DDIM

def _ddim(dae):
    from .sampling import Denoiser, make_scheduler

    c = dae.config
    common = dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule, beta_start=c.beta_start,
                  beta_end=c.beta_end, prediction_type=c.prediction_type)
    scheduler = make_scheduler("ddim", **common)
    return scheduler, (lambda z: Denoiser(lambda x, t: dae(x, t, z), make_scheduler("ddpm", **common)))


def _sigma_grid(scheduler, steps: int) -> list[float]:
    """The DDIM σ grid (descending, ending at 0) that sample_latents walks for ``steps`` steps."""
    if steps < 1:
        raise LandmarkTalkError(f"steps {steps}: give at least 1 DDIM step")
    scheduler.set_timesteps(steps)
    alphas = scheduler.alphas_cumprod.double()[scheduler.timesteps.long().cpu()]
    return (((1 - alphas) / alphas).sqrt()).tolist() + [0.0]


@torch.no_grad()
def invert_crops(dae, images: torch.Tensor, z_sem: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """DDIM inversion: crops [B, 3, S, S] in -1..1 + their ``z_sem`` → unit-scale noise ``x_T`` [B, 3, S, S].

    Decoding that noise with :func:`decode_latents` and the same ``z_sem`` and ``steps`` gives the crops
    back (up to the ODE discretisation error).
    """
    scheduler, denoiser = _ddim(dae)
    denoise = denoiser(z_sem)
    sigmas = _sigma_grid(scheduler, steps)[::-1]  # ascending from 0
    floor = math.sqrt((1 - float(scheduler.alphas_cumprod[0])) / float(scheduler.alphas_cumprod[0]))
    x = images.float()
    for low, high in zip(sigmas[:-1], sigmas[1:]):
        # The Euler step of the probability-flow ODE, run upwards; at σ = 0 use the first training level.
        at = max(low, floor)
        sigma = torch.full((x.shape[0],), at, dtype=torch.float32, device=x.device)
        x0 = denoise(x, sigma)
        x = x0 + (high / at) * (x - x0)
    return x / sigmas[-1]


@torch.no_grad()
def decode_latents(dae, z_sem: torch.Tensor, noise: torch.Tensor, steps: int = 50,
                   callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Deterministic DDIM decoding of ``z_sem`` [B, latent_dim] from ``noise`` [B or 1, 3, S, S] → crops in -1..1."""
    from .sampling import sample_latents

    scheduler, denoiser = _ddim(dae)
    noise = noise.expand(z_sem.shape[0], *noise.shape[1:]) if noise.shape[0] == 1 else noise
    return sample_latents(denoiser(z_sem), noise, scheduler, steps, callback=callback).clamp(-1, 1)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------------------- render

@torch.no_grad()
def _predict_latent_sequence(s2l, features: np.ndarray, pose: np.ndarray, device) -> torch.Tensor:
    """z_sem [T, L]: overlapping windows of the trained context length, blended with triangular weights."""
    total, window = len(features), s2l.config.context_frames
    audio = torch.as_tensor(features, dtype=torch.float32, device=device)[None]
    poses = torch.as_tensor(pose, dtype=torch.float32, device=device)[None]
    if total <= window:
        return s2l.predict_latents(audio, poses)[0]
    hop = max(1, window // 2)
    starts = list(range(0, total - window + 1, hop))
    if starts[-1] != total - window:
        starts.append(total - window)
    weights = torch.minimum(torch.arange(1, window + 1), torch.arange(window, 0, -1)).float().to(device)
    out = torch.zeros(total, s2l.config.latent_dim, device=device)
    norm = torch.zeros(total, 1, device=device)
    for start in starts:
        part = slice(start, start + window)
        out[part] += s2l.predict_latents(audio[:, part], poses[:, part])[0] * weights[:, None]
        norm[part] += weights[:, None]
    return out / norm


@torch.no_grad()
def encode_semantic_latents(dae, crops: np.ndarray, *, chunk_frames: int = 64,
                            device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 aligned crops [T, H, W, 3] → ``z_sem`` [T, latent_dim] float32 on the CPU."""
    from .train.dae_task import crops_to_tensor

    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8 or not len(crops):
        raise LandmarkTalkError(f"crops: expected uint8 [T, H, W, 3] aligned face crops, got {crops.dtype} {crops.shape}")
    size = dae.config.image_size
    return torch.cat([dae.encode(crops_to_tensor(crops[s:s + chunk_frames], size).to(device)).float().cpu()
                      for s in range(0, len(crops), chunk_frames)])


def predict_semantic_latents(speech2latent, speech: Audio | np.ndarray, fps: float, pose: np.ndarray, *,
                             device: str | torch.device = "cpu") -> torch.Tensor:
    """Speech + pose → ``z_sem`` [T, latent_dim] (float32 on ``device``).

    ``speech``: an :class:`Audio` (features computed here, T = round(duration × fps)) or precomputed
    feature windows [T, W, D]; ``pose``: [T, 3] radians (yaw, pitch, roll), e.g. from
    :func:`estimate_head_pose` on a driving video or :func:`pose_curve`.
    """
    if isinstance(speech, Audio):
        from .audio import compute_audio_features

        features = compute_audio_features(speech, fps, window=speech2latent.config.audio_window).features
    else:
        features = np.asarray(speech, np.float32)
    pose = np.asarray(pose, np.float32)
    if pose.shape != (len(features), 3):
        raise LandmarkTalkError(f"pose: expected [{len(features)}, 3] (one yaw/pitch/roll per frame of the speech), "
                                f"got {pose.shape}")
    if not np.isfinite(pose).all():
        raise LandmarkTalkError("pose: holds NaN (frames without a face); fill the gaps with pose_curve(base=...)")
    return _predict_latent_sequence(speech2latent, features, pose, torch.device(device))


def decode_semantic_latents(
    dae,
    z_sem: torch.Tensor,
    reference_crop: np.ndarray,
    *,
    steps: int = 50,
    chunk_frames: int = 16,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 crops [t, S, S, 3] decoded from ``z_sem`` [T, latent_dim], chunk by chunk.

    ``reference_crop``: uint8 [H, W, 3] aligned face crop whose DDIM inversion is the ``x_T`` every frame
    shares (S = the DAE's image size).
    """
    from .train.dae_task import crops_to_tensor

    reference = np.asarray(reference_crop)
    if reference.ndim != 3 or reference.shape[2] != 3 or reference.dtype != np.uint8:
        raise LandmarkTalkError(f"reference_crop: expected uint8 [H, W, 3], got {reference.dtype} {reference.shape}")
    z_sem = torch.as_tensor(z_sem, dtype=torch.float32)
    if z_sem.ndim != 2 or z_sem.shape[1] != dae.config.latent_dim:
        raise LandmarkTalkError(f"z_sem: expected [T, {dae.config.latent_dim}] semantic latents of this DAE, "
                                f"got {tuple(z_sem.shape)}")
    device = torch.device(device)
    image = crops_to_tensor(reference[None], dae.config.image_size).to(device)
    with torch.no_grad():
        noise = invert_crops(dae, image, dae.encode(image), steps)
    total = len(z_sem)
    for start in range(0, total, chunk_frames):
        yield _to_uint8(decode_latents(dae, z_sem[start:start + chunk_frames].to(device), noise, steps))
        if progress is not None:
            progress(min(start + chunk_frames, total), total)


def render_dae_frames(
    dae,
    speech2latent,
    speech: Audio | np.ndarray,
    fps: float,
    reference_crop: np.ndarray,
    pose: np.ndarray,
    *,
    steps: int = 50,
    chunk_frames: int = 16,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Speech + pose + reference crop → uint8 crops [t, S, S, 3], chunk by chunk.

    :func:`predict_semantic_latents` then :func:`decode_semantic_latents`; see those for the inputs.
    """
    z_sem = predict_semantic_latents(speech2latent, speech, fps, pose, device=device)
    yield from decode_semantic_latents(dae, z_sem, reference_crop, steps=steps, chunk_frames=chunk_frames,
                                       device=device, progress=progress)


_PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def render_dae_video(
    face: str | os.PathLike,
    speech: str | os.PathLike,
    models_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    pose: str = "",
    steps: int = 50,
    chunk_frames: int = 16,
    length_mode: str = "pingpong",
    crop_size: int = 256,
    device: str = "cpu",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Re-voice ``face`` (photo or video) with ``speech`` through the DAE path; writes an H.264 + AAC ``out``.

    The head pose follows the face video's own tracked pose (played back and forth, or looped, when the
    speech is longer: ``length_mode``), overridden per angle by the ``pose`` curve text (see
    :func:`pose_curve`). Crops are decoded from the first frame's inverted noise and pasted back.
    """
    from .checkpoint import load_checkpoint
    from .face import align_faces, crop_landmarks, paste_faces, track_face
    from .media import VideoWriter, read_audio, read_image, read_video
    from .schedule import source_frame_schedule
    from .types import frame_count_for

    face, models = Path(face), Path(models_dir)
    for name in (DAE_FILE, SPEECH2LATENT_FILE):
        if not (models / name).is_file():
            raise FileNotFoundError(f"{models / name}: missing; fit the DAE path first (fit_dae / `fit CLIP --path dae`)")
    dae = load_checkpoint(models / DAE_FILE, "dae").to(device).eval()
    s2l = load_checkpoint(models / SPEECH2LATENT_FILE, "speech2latent").to(device).eval()
    if face.suffix.lower() in _PHOTO_SUFFIXES:
        frames, fps = read_image(face)[None], 25.0
    else:
        frames, fps = read_video(face)
    audio = read_audio(speech, sample_rate=16000, mono=True)
    total = frame_count_for(audio.duration_s, fps)
    track = track_face(frames, fps, crop_size=crop_size)
    schedule = source_frame_schedule(len(frames), total, length_mode)
    driving = estimate_head_pose(crop_landmarks(track).points)[schedule]
    poses = pose_curve(pose, total, fps, base=driving)
    reference = align_faces(frames[:1], track, dae.config.image_size)[0]
    chunks = render_dae_frames(dae, s2l, audio, fps, reference, poses, steps=steps, chunk_frames=chunk_frames,
                               device=device, progress=progress)
    with VideoWriter(out, fps=fps, audio=audio, overwrite=overwrite) as writer:
        done = 0
        for crops in chunks:
            index = schedule[done:done + len(crops)]
            writer.write(paste_faces(frames[index], crops, _select_frames(track, index)))
            done += len(crops)
    return writer.path


def _select_frames(track, index: np.ndarray):
    """The rows ``index`` of a face track, as a track (frames picked by a playback schedule)."""
    from dataclasses import replace

    return replace(track, landmarks=track.landmarks[index], confidence=track.confidence[index],
                   transforms=track.transforms[index],
                   filled=track.filled[index] if len(track.filled) else np.zeros(len(index), bool))


# ----------------------------------------------------------------------------------------- fit

def fit_dae(
    clip: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    holdout: float = 0.2,
    steps: int | None = None,
    speech2latent_steps: int | None = None,
    preset: str = "tiny",
    crop_size: int = 128,
    batch_size: int = 8,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Train ``out_dir/dae.safetensors`` then ``out_dir/speech2latent.safetensors`` on ``clip``; returns the record.

    The clip is prepared once with :func:`pipelines.cache.prepare_clip_cache` (``crop_size`` crops, resized
    to the preset's size in training). A model file already there is kept (delete it to retrain); a run
    cut short resumes. ``steps`` / ``speech2latent_steps`` override the tasks' defaults.
    ``progress(model, step, total)``.
    """
    from .cache import load_clip_caches
    from .train.cli import train_from_argv

    if not 0.0 <= holdout < 0.9:
        raise LandmarkTalkError(f"holdout {holdout}: give a fraction in [0, 0.9), e.g. 0.2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    [cache] = load_clip_caches(clip, crop_size=crop_size, cache_dir=cache_dir)
    common = ["--data", str(cache.root), "--holdout", str(holdout), "--seed", str(seed), "--preset", preset,
              "--batch-size", str(batch_size)]
    record = {"clip": str(Path(clip).resolve()), "cache": str(cache.root), "holdout": holdout, "preset": preset,
              "files": {"dae": DAE_FILE, "speech2latent": SPEECH2LATENT_FILE}, "seconds": {}}
    jobs = [("dae", DAE_FILE, ["--steps", str(steps)] if steps else []),
            ("speech2latent", SPEECH2LATENT_FILE, ["--dae", str(out / DAE_FILE)]
             + (["--steps", str(speech2latent_steps)] if speech2latent_steps else []))]
    for kind, filename, extra in jobs:
        target = out / filename
        state = target.with_name(target.name.removesuffix(".safetensors") + ".train-state.pt")
        if target.is_file() and not state.is_file():
            logger.info("keeping %s (delete it to retrain)", target)
            continue
        logger.info("fitting %s → %s", kind, target)
        record["seconds"][kind] = round(train_from_argv(kind, ["--out", str(target), *common, *extra], progress), 1)
    previous = out / DAE_RECORD
    if previous.is_file():  # keep the timings of models trained by an earlier call
        record["seconds"] = {**json.loads(previous.read_text()).get("seconds", {}), **record["seconds"]}
    previous.write_text(json.dumps(record, indent=1))
    return record


# ----------------------------------------------------------------------------------------- evaluation

def _crop_landmarks(crops: np.ndarray, detector, size: int = 256) -> np.ndarray:
    """dlib landmarks [T, 68, 2] on crops upscaled to ``size``² (NaN where no face is found)."""
    import cv2

    from .face import detect_landmarks

    out = np.full((len(crops), 68, 2), np.nan, np.float32)
    for t, crop in enumerate(crops):
        big = cv2.resize(np.asarray(crop), (size, size), interpolation=cv2.INTER_CUBIC)
        found = detect_landmarks(big, detector=detector)
        if found is not None:
            out[t] = found.landmarks
    return out


def _figures(pred: np.ndarray, truth: np.ndarray, truth_points: np.ndarray, detector) -> dict:
    """PSNR, SSIM, M-LMD, F-LMD, and how the mouth opening follows the truth's (Pearson r, std ratio)."""
    from .evaluation.metrics import MOUTH_POINTS, landmark_distance, lip_opening, psnr_per_frame, ssim_per_frame

    points = _crop_landmarks(pred, detector)
    found = np.isfinite(points).all(axis=(1, 2))
    mouth = landmark_distance(points, truth_points, points=MOUTH_POINTS)
    face = landmark_distance(points, truth_points)
    opening, truth_opening = lip_opening(points), lip_opening(truth_points)
    both = np.isfinite(opening) & np.isfinite(truth_opening)
    truth_moves = both.sum() > 2 and np.std(truth_opening[both]) > 0
    moving = truth_moves and np.std(opening[both]) > 0
    return {"psnr": float(np.mean(np.minimum(psnr_per_frame(pred, truth), 100.0))),
            "ssim": float(np.mean(ssim_per_frame(pred, truth))),
            "m_lmd": float(np.nanmean(mouth)) if np.isfinite(mouth).any() else None,
            "f_lmd": float(np.nanmean(face)) if np.isfinite(face).any() else None,
            # A still mouth has no correlation to speak of: None, and a std ratio of 0.
            "lip_open_r": float(np.corrcoef(opening[both], truth_opening[both])[0, 1]) if moving else None,
            "lip_open_std_ratio": float(np.std(opening[both]) / np.std(truth_opening[both])) if truth_moves else None,
            "face_found": float(found.mean())}


def evaluate_dae_holdout(
    out_dir: str | os.PathLike,
    *,
    steps: int = 50,
    chunk_frames: int = 16,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Render the held-out tail of a :func:`fit_dae` clip from its own audio and tracked pose and score it.

    Crops at the DAE's size are compared with the true tail crops: PSNR, SSIM, M-LMD/F-LMD (mean
    landmark distance on mouth/all points, pixels of a 256² crop, dlib on both sides) and the mouth
    opening's Pearson r and std ratio against the truth's. The pose is the tail's own tracked pose
    (DAE-Talker's pose-controlled mode), so the head motion is given, not predicted. Beside ``dae``:
    ``still`` (the first tail crop on every frame) and ``reconstruction`` (the true crops encoded to
    ``z_sem`` and decoded with the shared ``x_T``: the DAE's own ceiling, isolating speech2latent's error).
    Writes ``dae_holdout.json`` and ``dae_holdout.npz`` (the crops) into ``out_dir``; returns the summary.
    """
    from .audio import compute_audio_features
    from .cache import load_clip_caches
    from .checkpoint import load_checkpoint
    from .face import load_landmark_detector
    from .train.dae_task import crops_to_tensor, resized_crops

    out = Path(out_dir)
    record_path = out / DAE_RECORD
    if not record_path.is_file():
        raise LandmarkTalkError(f"{out}: no {DAE_RECORD}; run fit_dae (or `fit CLIP --path dae --holdout 0.2`) first")
    record = json.loads(record_path.read_text())
    if not record.get("holdout"):
        raise LandmarkTalkError(f"{out}: the fit kept no held-out tail; fit again with holdout 0.2")
    dae = load_checkpoint(out / DAE_FILE, "dae").to(device).eval()
    s2l = load_checkpoint(out / SPEECH2LATENT_FILE, "speech2latent").to(device).eval()
    [cache] = load_clip_caches(record["cache"])
    _, tail = cache.train_val_frames(record["holdout"])
    size = dae.config.image_size
    truth = resized_crops(cache.crops()[tail.start:tail.stop], size)
    features = compute_audio_features(cache.audio(), cache.fps, window=s2l.config.audio_window,
                                      num_frames=cache.num_frames).features[tail.start:tail.stop]
    pose = estimate_head_pose(cache.landmarks()[tail.start:tail.stop])

    started = time.perf_counter()
    renders = {"dae": np.concatenate(list(render_dae_frames(dae, s2l, features, cache.fps, truth[0], pose,
                                                            steps=steps, chunk_frames=chunk_frames, device=device,
                                                            progress=progress)))}
    seconds = time.perf_counter() - started
    with torch.no_grad():
        images = crops_to_tensor(truth, size).to(device)
        noise = invert_crops(dae, images[:1], dae.encode(images[:1]), steps)
        renders["reconstruction"] = np.concatenate([
            _to_uint8(decode_latents(dae, dae.encode(images[s:s + chunk_frames]), noise, steps))
            for s in range(0, len(images), chunk_frames)])
    renders["still"] = np.repeat(truth[:1], len(truth), axis=0)

    detector = load_landmark_detector("dlib")
    truth_points = _crop_landmarks(truth, detector)
    figures = {name: _figures(frames, truth, truth_points, detector) for name, frames in renders.items()}
    summary = {"clip": record["clip"], "fps": cache.fps, "holdout_frames": len(tail), "crop_size": size,
               "steps": steps, "render_seconds": round(seconds, 1), "truth_face_found":
               float(np.isfinite(truth_points).all(axis=(1, 2)).mean()), "metrics": figures}
    (out / "dae_holdout.json").write_text(json.dumps(summary, indent=1))
    np.savez_compressed(out / "dae_holdout.npz", truth=truth, **renders)
    for name, m in figures.items():
        logger.info("%-14s %s", name, "  ".join(f"{k}={v:.4g}" for k, v in m.items() if v is not None))
    return summary
