"""The whole landmark-diffusion chain as one streaming render: face + speech → talking video.

Audio → features → A2L landmarks, a window of ``landmark_chunk_frames`` at a time (the LSTMs' state
carried across windows) → per chunk of output frames: align the source frames, encode the masked pose,
rasterise the landmarks, sample L2V latents, decode, paste back, write. With a seed search
(``RenderSettings.seed_candidates``), the first chunks are sampled with each candidate noise seed first and the
seed whose re-detected mouth follows the landmarks best renders the clip. The speech is decoded to
temporary files that the features read a stretch at a time and the encoder muxes directly, so nothing in
memory grows with the audio's length; the output is written to a temporary file and renamed at the end
(nothing is left on failure or cancel).
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from .errors import LandmarkTalkError
from .schedule import LENGTH_MODES, source_frame_schedule
from .types import Audio, FaceTrack, Landmarks, frame_count_for

if TYPE_CHECKING:
    from .media import AudioFile

__all__ = ["RenderSettings", "TalkingHeadModels", "load_talking_head_models", "mouth_following_error",
           "render_talking_frames", "render_video"]

logger = logging.getLogger(__name__)

MODEL_FILES = {"a2l": "a2l.safetensors", "l2v": "l2v.safetensors", "codec": "face_autoencoder.safetensors"}
SPEAKER_FILE = "speaker.npy"
# The seed search the CLI and the Render node run by default (RenderSettings' own default, 1, searches
# nothing): measured in docs/RESULTS.md ("Seed search").
SEED_SEARCH_CANDIDATES = 8
SEED_SEARCH_PROBE_FRAMES = 16
# The sampling strength the CLI and the Render node use by default (RenderSettings' own default, 1, starts
# from pure noise): measured in docs/RESULTS.md ("A finer landmark image, and starting from the reference").
RENDER_DENOISE = 0.4
# How A2L's mouth motion is shaped by the CLI and the Render node (RenderSettings' own defaults leave it as
# predicted): centred on the face video's median mouth and scaled by 0.75. Chosen on an inner split of the
# training part, checked on the held-out tails: docs/RESULTS.md, "Centring A2L's motion".
RENDER_MOTION_SCALE = 0.75
RENDER_CENTER_MOTION = True
_PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class RenderSettings:
    """How to sample and write. ``fps`` None = the face video's rate (25 for a photo)."""

    steps: int = 20
    sampler: str = "dpmpp_2m"
    guidance: float = 1.0
    seed: int = 0
    # Seed search: the first ``seed_probe_frames`` output frames are rendered with seeds seed … seed +
    # seed_candidates - 1, and the seed whose re-detected mouth lies closest to the landmarks asked for
    # renders the clip. One noise is shared by every frame, so the seed moves a whole clip (docs/RESULTS.md);
    # the search costs (candidates - 1) × probe frames of sampling whatever the clip's length. 1 = off.
    seed_candidates: int = 1
    seed_probe_frames: int = SEED_SEARCH_PROBE_FRAMES
    chunk_frames: int = 16
    length_mode: str = "pingpong"
    progressive: float = 0.0
    # Sampling strength: below 1 every frame starts from the identity reference (the first source frame)
    # noised to this level rather than from pure noise (SDEdit), keeping its lips where the landmarks agree.
    denoise: float = 1.0
    # A2L's predicted mouth motion: with ``center_motion`` (a face video only; a photo has no mouth motion
    # of its own to centre on) its mean over the render is moved onto the video's median mouth, then it is
    # scaled by ``motion_scale`` (1 = as predicted, 0 = the median mouth held still).
    motion_scale: float = 1.0
    center_motion: bool = False
    face: str | int = "largest"
    fps: float | None = None
    crf: int = 18
    device: str = "cpu"
    dtype: str = "float32"
    # "lower": only the mouth and jaw are pasted, so eyes, brows and skin above the nose stay the source's
    # own pixels (sharp and exactly in place); "face": the whole generated face.
    paste_region: str = "lower"
    # A face video whose decoded frames would take more than this is decoded once into a temporary folder
    # and read back by index (memory-mapped): a long or large source costs disk, not memory.
    video_in_memory_mb: int = 2048
    # Audio features and A2L landmarks are made this many output frames at a time (1 min at 25 fps):
    # enough to keep their per-call overhead negligible, small enough to keep memory flat in the speech.
    landmark_chunk_frames: int = 1500

    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise LandmarkTalkError(f"dtype {self.dtype!r}: choose float32, bfloat16 or float16")
        return getattr(torch, self.dtype)


@dataclass
class TalkingHeadModels:
    """The models one render needs: A2L, the L2V denoiser and the latent codec it was trained in.

    ``speaker``: the fitted person's voice embedding (A2L's identity input); None = embed the driving audio.
    ``refiner``: the person's SOVQAE (``fit --path ladtalk``), run over every decoded face crop before
    paste-back to restore the detail the codec and the denoiser smooth away; None = paste the decoded crops.
    ``speech_encoder``: the local wav2vec2/HuBERT encoder (:func:`~pipelines.audio.encoders.load_speech_encoder`)
    whose hidden states A2L reads, for A2L models fitted with ``--speech-encoder``; None for log-mel models.
    """

    a2l: torch.nn.Module
    l2v: torch.nn.Module
    codec: object
    speaker: np.ndarray | None = None
    refiner: torch.nn.Module | None = None
    speech_encoder: object | None = None

    def to(self, device: str | torch.device) -> "TalkingHeadModels":
        self.a2l.to(device)
        self.l2v.to(device)
        self.codec.to(device)
        if self.refiner is not None:
            self.refiner.to(device)
        if self.speech_encoder is not None:
            self.speech_encoder.model.to(device)
            self.speech_encoder.device = str(device)
        return self


def load_talking_head_models(
    models_dir: str | os.PathLike, *, codec: str | os.PathLike | None = None,
    refiner: str | os.PathLike | None = None, speech_encoder: str | os.PathLike | None = None, device: str = "cpu",
) -> TalkingHeadModels:
    """Load ``a2l.safetensors``, ``l2v.safetensors`` and the codec from a folder written by ``fit``.

    ``codec``: a face autoencoder file or a TAEF2 folder, when the L2V model was fitted in a latent space
    other than the folder's own ``face_autoencoder.safetensors``. ``refiner``: a SOVQAE file (written by
    ``fit CLIP --path ladtalk``) to refine every generated crop.
    """
    from .checkpoint import load_checkpoint
    from .latents import load_latent_codec
    from .models.l2v import load_l2v

    folder = Path(models_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--models {folder}: no such folder; write one with `python -m pipelines fit CLIP --out {folder}`")
    needed = ["a2l", "l2v"] + (["codec"] if codec is None else [])
    for key in needed:
        if not (folder / MODEL_FILES[key]).is_file():
            raise FileNotFoundError(
                f"--models {folder}: missing {MODEL_FILES[key]}; it belongs in {folder}/ "
                f"(run `python -m pipelines fit CLIP --out {folder}` to train it)"
            )
    latent_codec = load_latent_codec(codec if codec is not None else folder / MODEL_FILES["codec"], device=device)
    l2v = load_l2v(folder / MODEL_FILES["l2v"], latent_codec, device=device)
    a2l = load_checkpoint(folder / MODEL_FILES["a2l"], "a2l", device=device)
    encoder = _load_a2l_speech_encoder(a2l.config, folder, speech_encoder, device)
    speaker = np.load(folder / SPEAKER_FILE) if (folder / SPEAKER_FILE).is_file() else None
    sovqae = None
    if refiner is not None:
        refiner = Path(refiner)
        if not refiner.is_file():
            raise FileNotFoundError(
                f"--refiner {refiner}: no such file; it belongs in {refiner.parent}/ "
                f"(train one with `python -m pipelines fit CLIP --path ladtalk --out {refiner.parent}`)"
            )
        sovqae = load_checkpoint(refiner, "sovqae", device=device)
    return TalkingHeadModels(a2l=a2l, l2v=l2v, codec=latent_codec, speaker=speaker, refiner=sovqae,
                             speech_encoder=encoder)


def _load_a2l_speech_encoder(config, folder: Path, path: str | os.PathLike | None, device: str):
    """The speech encoder an A2L model needs: ``path``, else the one its fit recorded; None for log-mel models."""
    from .audio.encoders import load_speech_encoder
    from .fit import read_fit_record
    from .models.a2l import feature_options, speech_encoder_name

    name = speech_encoder_name(config)
    if path is None and name is not None:
        recorded = (read_fit_record(folder) or {}).get("speech_encoder")
        if not recorded or not Path(recorded).exists():
            raise LandmarkTalkError(
                f"--models {folder}: {MODEL_FILES['a2l']} reads the hidden states of the speech encoder {name!r}"
                + (f", recorded at {recorded}, which is gone" if recorded else "")
                + "; give that save_pretrained folder with --speech-encoder")
        path = recorded
    encoder = load_speech_encoder(path, device=device) if path is not None else None
    feature_options(config, encoder)  # the right encoder for this model, or a message saying which
    return encoder


def _select_track(track: FaceTrack, indices: np.ndarray) -> FaceTrack:
    return replace(
        track, landmarks=track.landmarks[indices], confidence=track.confidence[indices],
        transforms=track.transforms[indices],
        filled=track.filled[indices] if len(track.filled) else np.zeros(len(indices), bool),
    )


def _to_model_images(crops: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _stream_clip_landmarks(
    models: TalkingHeadModels, audio: "Audio | AudioFile", reference: Landmarks, fps: float, *,
    schedule: np.ndarray | None = None, window_frames: int = 1500, motion_scale: float = 1.0,
    center_motion: bool = False,
) -> Iterator[Landmarks]:
    """A2L landmarks for consecutive output frames, ``window_frames`` of audio features at a time.

    ``center_motion`` (only where the reference has more than one frame) runs A2L over the speech twice:
    once for the mean of its motion, once to place the centred motion."""
    from .audio import compute_speaker_embedding
    from .audio.features import encode_audio, iter_audio_features
    from .models.a2l import feature_options, mean_landmark_motion, stream_landmarks

    config = models.a2l.config
    num_frames = frame_count_for(audio.duration_s, fps)
    speaker = models.speaker
    if speaker is None:  # the voice embedding needs the whole speech once (3.8 MB a minute at 16 kHz)
        speaker = compute_speaker_embedding(audio if isinstance(audio, Audio) else audio.load(),
                                            method=config.speaker_method)

    options = feature_options(config, models.speech_encoder)
    centred = center_motion and len(reference) > 1
    if centred and options["kind"] == "encoder":  # two passes over the speech: run the encoder once
        options["encoded"] = encode_audio(audio, models.speech_encoder)

    def features():
        return iter_audio_features(audio, fps, num_frames=num_frames, window_frames=window_frames, **options)

    offset = None
    if centred:
        offset = mean_landmark_motion(models.a2l, features(), reference, speaker, schedule=schedule)
    return stream_landmarks(models.a2l, features(), reference, speaker, schedule=schedule, motion_scale=motion_scale,
                            motion_offset=offset)


def predict_clip_landmarks(models: TalkingHeadModels, audio: Audio, reference: Landmarks, fps: float, *,
                           motion_scale: float = 1.0, center_motion: bool = False) -> Landmarks:
    """A2L landmarks for every output frame, placed on ``reference`` (one frame or one per output frame);
    ``motion_scale``, ``center_motion``: as in :class:`RenderSettings`."""
    parts = list(_stream_clip_landmarks(models, audio, reference, fps, motion_scale=motion_scale,
                                        center_motion=center_motion))
    return Landmarks(points=np.concatenate([part.points for part in parts]), crop_size=reference.crop_size,
                     fps=parts[0].fps)


def _take_frames(windows: Iterator[Landmarks], counts: Iterator[int]) -> Iterator[np.ndarray]:
    """Re-cut a stream of landmark windows into pieces of the given frame counts."""
    pending: list[np.ndarray] = []
    held = 0
    for count in counts:
        while held < count:
            window = next(windows).points
            pending.append(window)
            held += len(window)
        joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
        yield joined[:count]
        pending, held = [joined[count:]], held - count


def render_talking_frames(
    models: TalkingHeadModels,
    frames: np.ndarray,
    track: FaceTrack,
    audio: "Audio | AudioFile",
    fps: float,
    settings: RenderSettings = RenderSettings(),
    *,
    landmarks: Landmarks | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 [t, H, W, 3] chunks of the talking video, ``round(audio duration × fps)`` frames in all.

    ``frames`` [N, H, W, 3] is the face video (N = 1 for a photo) and ``track`` its face track; they are
    played per ``settings.length_mode`` to cover the audio. ``audio``: the speech, in memory or decoded to
    a file (:func:`pipelines.media.decode_audio_file`, then read a stretch at a time). ``landmarks`` (crop
    pixels at the model's size, one per output frame) replaces A2L's prediction, e.g. ground truth for an
    upper-bound baseline.
    ``progress(done_frames, total_frames)``; raise from it to cancel.
    """
    from .face import align_faces, crop_landmarks, paste_faces
    from .models.l2v import encode_pose_latents, landmark_inputs, render_latents
    from .refine import refine_frames

    if settings.paste_region not in ("lower", "face"):
        raise LandmarkTalkError(f"paste region {settings.paste_region!r}: choose 'lower' or 'face'")
    if settings.seed_candidates < 1 or settings.seed_probe_frames < 1:
        raise LandmarkTalkError(f"seed search: {settings.seed_candidates} candidates over {settings.seed_probe_frames} "
                                "probe frames; give 1 or more of each (1 candidate = no search)")
    if settings.length_mode not in LENGTH_MODES:
        raise LandmarkTalkError(f"length mode {settings.length_mode!r}: choose one of {', '.join(LENGTH_MODES)}")
    # Checked here, before any audio is read or frame sampled, rather than deep in the sampler or A2L.
    if not 0.0 < settings.denoise <= 1.0:
        raise LandmarkTalkError(f"denoise {settings.denoise}: give a sampling strength in (0, 1], e.g. {RENDER_DENOISE}")
    if not 0.0 <= settings.motion_scale <= 2.0:
        raise LandmarkTalkError(f"motion scale {settings.motion_scale}: give a factor in [0, 2], e.g. {RENDER_MOTION_SCALE}")
    total = frame_count_for(audio.duration_s, fps)
    if total < 1:
        raise LandmarkTalkError(
            f"audio: {audio.duration_s:.3f} s is shorter than one frame at {fps:g} fps; give at least {1 / fps:.3f} s of speech"
        )
    if len(frames) != len(track):
        raise LandmarkTalkError(f"track: {len(track)} frames for a face video of {len(frames)}; track this video")
    l2v, codec = models.l2v, models.codec
    size = l2v.config.image_size
    device = torch.device(settings.device)
    dtype = settings.torch_dtype()
    schedule = source_frame_schedule(len(frames), total, settings.length_mode)
    source_points = crop_landmarks(track, size).points
    if landmarks is None:
        # Each output frame is laid onto its scheduled source frame, as if the reference were
        # source_points[schedule], without making that [total, 68, 2] array.
        if settings.landmark_chunk_frames < 1:
            raise LandmarkTalkError(f"landmark chunk of {settings.landmark_chunk_frames} frames: give 1 or more")
        reference = Landmarks(points=source_points, crop_size=size, fps=fps)
        windows = _stream_clip_landmarks(models, audio, reference, fps, schedule=schedule,
                                         window_frames=settings.landmark_chunk_frames,
                                         motion_scale=settings.motion_scale, center_motion=settings.center_motion)
    else:
        if len(landmarks) != total or landmarks.crop_size != size:
            raise LandmarkTalkError(
                f"landmarks: {len(landmarks)} frames at {landmarks.crop_size} px; the render needs {total} at {size} px"
            )
        windows = iter([landmarks])
    # Output frames are made in chunks of chunk_frames; with a seed search the probe is chunked on its own, so
    # it is exactly seed_probe_frames long.
    probe = min(settings.seed_probe_frames, total) if settings.seed_candidates > 1 else 0
    bounds = list(range(0, probe, settings.chunk_frames)) + list(range(probe, total, settings.chunk_frames)) + [total]
    spans = list(zip(bounds[:-1], bounds[1:]))
    chunk_landmarks = _take_frames(windows, (end - start for start, end in spans))

    # One identity reference for the clip (DiffTalk): the first source frame.
    identity = codec.encode(_to_model_images(align_faces(frames[:1], _select_track(track, np.array([0])), size), device))
    latent_shape = (l2v.config.latent_channels, l2v.config.latent_size, l2v.config.latent_size)

    def seed_noise(seed: int) -> torch.Tensor:  # shared by every frame: steady texture
        return torch.randn(latent_shape, generator=torch.Generator().manual_seed(seed))

    def chunk_track(span: tuple[int, int]) -> tuple[np.ndarray, FaceTrack]:
        indices = schedule[span[0]:span[1]]
        return indices, _select_track(track, indices)

    def sample_chunk(span: tuple[int, int], chunk_points: np.ndarray, noise: torch.Tensor, previous) -> torch.Tensor:
        indices, part = chunk_track(span)
        crops = align_faces(frames[indices], part, size)
        pose = encode_pose_latents(codec, _to_model_images(crops, device), source_points[indices])
        images, points = landmark_inputs(chunk_points, size, l2v.config.landmark_image_size)
        return render_latents(
            l2v, codec, pose=pose, identity=identity, landmark_images=images, landmark_points=points,
            sampler=settings.sampler, steps=settings.steps, guidance=settings.guidance, noise=noise,
            chunk_size=len(indices), progressive=settings.progressive, previous=previous, denoise=settings.denoise,
            device=device, dtype=dtype,
        )

    def paste_chunk(span: tuple[int, int], latents: torch.Tensor) -> np.ndarray:
        indices, part = chunk_track(span)
        generated = codec.decode_frames(latents)
        if models.refiner is not None:
            # float32: the refiner is small, and a bf16 pass would blunt the very detail it restores.
            generated = refine_frames(models.refiner, generated, batch_size=max(1, len(generated)), device=device)
        return paste_faces(frames[indices], generated, part, region=settings.paste_region)

    def probe_error(probe_latents: list[torch.Tensor], probe_points: list[np.ndarray], detector) -> float:
        # Scored on the pasted frames aligned back to crops, as a viewer and the hold-out's M-LMD see the
        # mouth: the paste-back's blend moves the lip corners and jaw a little.
        crops = [align_faces(paste_chunk(span, latents), chunk_track(span)[1], size)
                 for span, latents in zip(spans, probe_latents)]
        return mouth_following_error(np.concatenate(crops), np.concatenate(probe_points), detector)

    previous, done, seed = None, 0, settings.seed
    kept: list[torch.Tensor] = []  # the chosen seed's probe latents, pasted again below (not held as frames)
    if probe:
        probe_points = [next(chunk_landmarks) for start, _ in spans if start < probe]
        seed, kept = _search_seed(sample_chunk, probe_error, seed_noise, spans, probe_points, settings,
                                  lambda: progress(0, total) if progress is not None else None)
    noise = seed_noise(seed)
    for index, span in enumerate(spans):
        latents = kept[index] if index < len(kept) else sample_chunk(span, next(chunk_landmarks), noise, previous)
        previous = latents[-1:]
        chunk = paste_chunk(span, latents)
        yield chunk
        done += len(chunk)
        if progress is not None:
            progress(done, total)


def mouth_following_error(crops: np.ndarray, landmarks_px: np.ndarray, detector=None) -> float:
    """Mean distance (crop pixels) of the mouth points (48–67) re-detected in face crops from the landmarks
    they were rendered with: how closely a render follows its landmark condition.

    ``crops`` uint8 [T, S, S, 3]; ``landmarks_px`` [T, 68, 2] in pixels of those crops. The fit is placed by
    the landmarks' stable points (brows, eyes, nose), so the mouth asked for does not steer the detection.
    """
    import cv2

    from .face.detect import load_landmark_detector

    if len(crops) != len(landmarks_px):
        raise LandmarkTalkError(f"mouth_following_error: {len(crops)} crops for {len(landmarks_px)} landmark frames")
    detector = detector or load_landmark_detector("dlib")
    errors = []
    for crop, target in zip(crops, np.asarray(landmarks_px, np.float64)):
        found, _ = detector.fit_landmarks(crop, cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), previous=target)
        errors.append(np.linalg.norm(found[48:68] - target[48:68], axis=1).mean())
    return float(np.mean(errors))


def _search_seed(sample_chunk, probe_error, seed_noise, spans, probe_points, settings: RenderSettings, heartbeat):
    """Sample the probe chunks with each candidate seed; return the best seed and its probe latents."""
    from .face.detect import load_landmark_detector

    detector = load_landmark_detector("dlib")
    best = None
    scores = []
    for seed in range(settings.seed, settings.seed + settings.seed_candidates):
        noise, previous, latents = seed_noise(seed), None, []
        for span, points in zip(spans, probe_points):
            latents.append(sample_chunk(span, points, noise, previous))
            previous = latents[-1][-1:]
        error = probe_error(latents, probe_points, detector)
        scores.append(f"{seed}: {error:.2f}")
        if best is None or error < best[0]:
            best = (error, seed, latents)
        heartbeat()  # lets a progress callback cancel between candidates
    logger.info("seed search over %d probe frames: mouth error (crop px) %s; rendering with seed %d",
                sum(map(len, probe_points)), ", ".join(scores), best[1])
    return best[1], best[2]


def _read_face(path: Path, fps: float | None) -> tuple[np.ndarray, float]:
    from .media import probe_media, read_image, read_video

    if not path.is_file():
        raise FileNotFoundError(f"--face {path}: no such file")
    if path.suffix.lower() in _PHOTO_SUFFIXES:
        return read_image(path)[None], float(fps or 25.0)
    info = probe_media(path)
    if not info.has_video:
        raise LandmarkTalkError(f"--face {path}: has no video stream; give a photo or a video of the person")
    frames, rate = read_video(path, fps=fps)
    return frames, rate


def _decoded_mb(face: Path, fps: float | None) -> float:
    """Megabytes the face's frames take decoded (0 for a photo or an unreadable file: the normal path reports it)."""
    from .media import probe_media

    if face.suffix.lower() in _PHOTO_SUFFIXES or not face.is_file():
        return 0.0
    try:
        info = probe_media(face)
    except (LandmarkTalkError, FileNotFoundError):
        return 0.0
    if not info.has_video or not info.width or not info.height:
        return 0.0
    count = frame_count_for(info.video_duration_s, fps) if fps and info.video_duration_s else (info.frame_count or 0)
    return count * info.width * info.height * 3 / 2**20


class _DiskFrames:
    """Decoded frames kept as .npy chunks in a folder and read back by index.

    Each read maps a chunk file, copies the frames asked for and unmaps it again, so frames read earlier do
    not stay resident in the process (a mapping kept open would hold every page it ever touched).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._paths: list[Path] = []
        self._starts: list[int] = []
        self._length = 0

    def append(self, chunk: np.ndarray) -> None:
        path = self.folder / f"{len(self._paths):06d}.npy"
        np.save(path, chunk)
        self._paths.append(path)
        self._starts.append(self._length)
        self._length += len(chunk)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key) -> np.ndarray:
        indices = np.atleast_1d(np.arange(self._length)[key])
        which = np.searchsorted(self._starts, indices, side="right") - 1
        out = None
        for chunk in np.unique(which):
            mapped = np.load(self._paths[chunk], mmap_mode="r")
            wanted = np.nonzero(which == chunk)[0]
            part = np.array(mapped[indices[wanted] - self._starts[chunk]])
            del mapped
            if out is None:
                out = np.empty((len(indices),) + part.shape[1:], part.dtype)
            out[wanted] = part
        return out


def _spill_and_track(face: Path, settings: RenderSettings, size: int,
                     folder: Path) -> tuple[_DiskFrames, float, FaceTrack]:
    """Decode the face video once: track it and keep its frames on disk (for videos too large for memory)."""
    from .face import track_face
    from .media import probe_media, read_video_frames

    info = probe_media(face)
    fps = float(settings.fps or info.fps or 25.0)
    frames = _DiskFrames(folder)

    def chunks():
        for chunk in read_video_frames(face, fps=fps):
            frames.append(chunk)
            yield chunk

    logger.info("%s: decoded frames exceed %d MB; keeping them in a temporary folder", face.name,
                settings.video_in_memory_mb)
    track = track_face(chunks(), fps=fps, crop_size=size, face=settings.face, source=str(face))
    return frames, fps, track


def _photo_with_head_motion(face: Path, pose_video: Path, settings: RenderSettings,
                            size: int) -> tuple[np.ndarray, float]:
    """The photo moved frame by frame like the head in ``pose_video``, at that video's rate (or settings.fps)."""
    from .face import track_face
    from .face.motion import apply_head_motion, head_motion_transforms

    if face.suffix.lower() not in _PHOTO_SUFFIXES:
        raise LandmarkTalkError(
            f"--pose-video {pose_video}: head motion is for a photo as --face; {face.name} is a video and "
            "brings its own head motion (drop --pose-video)"
        )
    driving, fps = _read_face(pose_video, settings.fps)
    if len(driving) < 2:
        raise LandmarkTalkError(f"--pose-video {pose_video}: give a video (two frames or more), not a photo")
    photo, _ = _read_face(face, fps)
    photo_track = track_face(photo, fps=fps, crop_size=size, face=settings.face, source=str(face))
    driving_track = track_face(driving, fps=fps, crop_size=size, face="largest", source=str(pose_video))
    transforms = head_motion_transforms(photo_track.landmarks[0], driving_track.landmarks)
    return apply_head_motion(photo[0], transforms), fps


def render_video(
    face: str | os.PathLike,
    audio: str | os.PathLike,
    models: TalkingHeadModels,
    out: str | os.PathLike,
    settings: RenderSettings = RenderSettings(),
    *,
    overwrite: bool = False,
    pose_video: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``face`` (photo or video) speaking ``audio`` to ``out`` (H.264 + AAC), atomically.

    ``pose_video``: with a photo as ``face``, a video whose head motion the photo follows (in-plane:
    translation, roll and scale; see :mod:`pipelines.face.motion`); its length then drives the length modes.
    """
    from .face import track_face
    from .media import VideoWriter, decode_audio_file

    face, audio_path, out = Path(face), Path(audio), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} already exists; choose another name or pass --overwrite")
    size = models.l2v.config.image_size
    with tempfile.TemporaryDirectory(prefix="landmarktalk-frames-") as spill:
        if pose_video is not None:
            frames, fps = _photo_with_head_motion(face, Path(pose_video), settings, size)
            # Every frame is the photo's mouth moved: there is no mouth motion to centre on.
            settings = replace(settings, center_motion=False)
            track = track_face(frames, fps=fps, crop_size=size, face=settings.face, source=str(face))
        elif _decoded_mb(face, settings.fps) > settings.video_in_memory_mb:
            frames, fps, track = _spill_and_track(face, settings, size, Path(spill))
        else:
            frames, fps = _read_face(face, settings.fps)
            track = track_face(frames, fps=fps, crop_size=size, face=settings.face, source=str(face))
        # Decoded to files, not arrays: the features read 16 kHz a stretch at a time, the encoder muxes the
        # original rate straight from disk, so a long speech costs disk rather than memory.
        speech = decode_audio_file(audio_path, Path(spill) / "speech.f32")
        speech_16k = decode_audio_file(audio_path, Path(spill) / "speech_16k.f32", sample_rate=16000)
        total = frame_count_for(speech.duration_s, fps)
        logger.info("rendering %d frames at %g fps from %s and %s", total, fps, face.name, audio_path.name)
        with VideoWriter(out, fps=fps, audio=speech, crf=settings.crf, overwrite=overwrite) as writer:
            for chunk in render_talking_frames(models, frames, track, speech_16k, fps, settings, progress=progress):
                writer.write(chunk)
    return out
