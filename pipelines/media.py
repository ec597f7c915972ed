"""Media I/O: video, image and audio files ↔ frames uint8 [T,H,W,3] and audio float32 [C,N].

Everything goes through the ffmpeg binary shipped by imageio-ffmpeg (no system ffmpeg/ffprobe), as
argument lists with raw frames piped through subprocess, so memory stays flat in video length.

Timing rules (the same in :func:`probe_media` and the readers):
- Video is delivered at a constant rate, ``fps`` (default: the source's nominal rate). ffmpeg's ``fps``
  filter resamples variable-frame-rate sources, duplicating or dropping frames, and starts the grid at
  t = 0 of the file so frame ``i`` shows time ``i / fps`` on the same clock as the audio.
- A video therefore yields ``round(video_duration_s * fps)`` frames, where ``video_duration_s`` is the
  time the last source frame ends, measured from the start of the file.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import LandmarkTalkError
from .types import Audio, MediaInfo, frame_count_for

__all__ = ["probe_media", "read_video_frames", "read_video", "read_image", "read_audio", "AudioFile", "decode_audio_file",
           "VideoWriter", "write_video"]

logger = logging.getLogger(__name__)

# Sample rates ffmpeg's native AAC encoder accepts; anything else is resampled up to the next one.
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# Rates ffmpeg prints rounded ("29.97") that are really NTSC fractions.
_NTSC_RATES = {23.98: Fraction(24000, 1001), 29.97: Fraction(30000, 1001), 59.94: Fraction(60000, 1001),
               119.88: Fraction(120000, 1001)}
# Channel counts of ffmpeg's named layouts, for probing a stream that has no packets to measure.
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4,
                    "quad(side)": 4, "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6,
                    "6.0": 6, "6.0(front)": 6, "3.1.2": 6, "hexagonal": 6, "6.1": 7, "6.1(back)": 7,
                    "6.1(front)": 7, "7.0": 7, "7.0(front)": 7, "7.1": 8, "7.1(wide)": 8, "7.1(wide-side)": 8,
                    "5.1.2": 8, "octagonal": 8, "cube": 8, "5.1.4": 10, "7.1.2": 10, "7.1.4": 12, "7.2.3": 12,
                    "9.1.4": 14, "hexadecagonal": 16, "22.2": 24}
_VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv"}
_CONTEXT_PREFIX = re.compile(r"^(?:\[[^\]]* @ [^\]]*\]\s*)+")
_LEVEL_PREFIX = re.compile(r"^(?:\[[^\]]* @ [^\]]*\]\s*)*\[(quiet|panic|fatal|error|warning|info|verbose|debug|trace)\]\s?")


# --------------------------------------------------------------------------------------------- ffmpeg


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a hard requirement of the pack
        raise LandmarkTalkError("media I/O needs imageio-ffmpeg; install it with `pip install imageio-ffmpeg`") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_problem(stderr: str) -> str:
    """The last meaningful line(s) ffmpeg printed, without its ``[demuxer @ 0x…]`` prefixes."""
    lines = []
    for raw in stderr.splitlines():
        line = _CONTEXT_PREFIX.sub("", _LEVEL_PREFIX.sub("", raw)).strip()
        # "Error opening input file X." only repeats the path we already name.
        if not line or line.startswith(("Error opening input file", "Conversion failed", "Exiting normally")):
            continue
        if line not in lines:
            lines.append(line)
    return "; ".join(lines[-2:]) if lines else "ffmpeg gave no reason"


def _check_input_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise LandmarkTalkError(f"{path}: is a folder, not a media file; give a video, image or audio file")
    return path


def _parse_float(value: str) -> float:
    # ffmpeg prints large rates as "90k".
    return float(value[:-1]) * 1000.0 if value.endswith("k") else float(value)


# ---------------------------------------------------------------------------------------------- probe


@dataclass
class _Header:
    """What ``ffmpeg -i`` says about a file before any packet is read."""

    container: str = ""
    duration_s: float | None = None
    video_codec: str | None = None
    coded_size: tuple[int, int] | None = None  # (width, height) before rotation
    nominal_fps: float | None = None
    rotation: int = 0
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_layout_channels: int | None = None
    problems: list[str] = field(default_factory=list)


def _parse_header(lines: list[str]) -> _Header:
    header = _Header()
    section = None  # "video" / "audio" / other, for side data lines that follow a stream line
    for line in lines:
        text = line.strip()
        if match := re.match(r"Input #0, (.+?), from '", text):
            header.container = match.group(1)
        elif match := re.match(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text):
            h, m, s = match.groups()
            header.duration_s = int(h) * 3600 + int(m) * 60 + float(s)
        elif match := re.match(r"Stream #0:\d+\S*: (\w+): (.*)$", text):
            kind, rest = match.groups()
            section = None
            if kind == "Video" and header.video_codec is None and "(attached pic)" not in rest:
                section = "video"
                header.video_codec = rest.split()[0].rstrip(",")
                if size := re.search(r", (\d+)x(\d+)\b", rest):
                    header.coded_size = (int(size.group(1)), int(size.group(2)))
                if tbr := re.search(r"([\d.]+k?) tbr", rest):
                    header.nominal_fps = _parse_float(tbr.group(1))
                elif fps := re.search(r"([\d.]+k?) fps", rest):
                    header.nominal_fps = _parse_float(fps.group(1))
            elif kind == "Audio" and header.audio_codec is None:
                section = "audio"
                header.audio_codec = rest.split()[0].rstrip(",")
                if audio := re.search(r", (\d+) Hz, ([^,]+)", rest):
                    header.audio_sample_rate = int(audio.group(1))
                    layout = audio.group(2).strip()
                    if count := re.match(r"(\d+) channels", layout):
                        header.audio_layout_channels = int(count.group(1))
                    else:
                        header.audio_layout_channels = _LAYOUT_CHANNELS.get(layout)
        elif section == "video" and (rot := re.search(r"rotation of (-?[\d.]+) degrees", text)):
            header.rotation = int(round(float(rot.group(1)))) % 360
    return header


@dataclass
class _Packets:
    """Packet timing of one stream from ffmpeg's framecrc muxer (seconds from the file's start)."""

    count: int = 0
    start_s: Fraction | None = None
    end_s: Fraction | None = None
    gaps: list[Fraction] = field(default_factory=list)
    bytes_first: int = 0
    duration_first: int = 0


def _parse_packets(text: str) -> dict[int, _Packets]:
    time_bases: dict[int, Fraction] = {}
    pts_lists: dict[int, list[tuple[int, int]]] = {}
    first: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if line.startswith("#tb "):
            index, tb = line[4:].split(":")
            num, den = tb.strip().split("/")
            time_bases[int(index)] = Fraction(int(num), int(den))
            continue
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 5:
            continue
        flags = next((int(f[2:], 16) for f in fields[6:] if f.startswith("F=")), 1)
        if flags & 0x4:  # AV_PKT_FLAG_DISCARD: edit-list lead-in the decoder drops
            continue
        index, dts, pts, duration, size = (int(f) for f in fields[:5])
        if pts == -(2**63):  # AV_NOPTS_VALUE
            pts = dts
        pts_lists.setdefault(index, []).append((pts, duration))
        first.setdefault(index, (size, duration))
    streams = {}
    for index, packets in pts_lists.items():
        tb = time_bases.get(index, Fraction(1, 1))
        packets.sort()
        starts = [p for p, _ in packets]
        gaps = [Fraction(b - a) * tb for a, b in zip(starts, starts[1:])]
        last_pts, last_duration = packets[-1]
        if last_duration <= 0 and gaps:
            # No duration on the last packet (some MKV/TS): assume the typical frame interval.
            last_duration = int(sorted(gaps)[len(gaps) // 2] / tb)
        streams[index] = _Packets(
            count=len(packets),
            start_s=starts[0] * tb,
            end_s=(last_pts + last_duration) * tb,
            gaps=gaps,
            bytes_first=first[index][0],
            duration_first=first[index][1],
        )
    return streams


def _fps_fraction(fps: float) -> Fraction:
    """An exact rate for ffmpeg: 29.97 → 30000/1001, 25.0 → 25."""
    rounded = round(float(fps), 2)
    if rounded in _NTSC_RATES and abs(float(fps) - float(_NTSC_RATES[rounded])) < 0.006:
        return _NTSC_RATES[rounded]
    return Fraction(float(fps)).limit_denominator(1_000_000)


def _round_half_up(value: Fraction) -> int:
    # ffmpeg's fps filter rounds to nearest, ties away from zero (AV_ROUND_NEAR_INF).
    return int((value + Fraction(1, 2)) // 1) if value >= 0 else -int((-value + Fraction(1, 2)) // 1)


def _nominal_fps(header_fps: float | None, average_fps: float | None) -> Fraction | None:
    if header_fps and 1.0 <= header_fps <= 240.0:
        return _fps_fraction(header_fps)
    if average_fps:
        # tbr missing or absurd (e.g. 90k from a transport stream): the average is the best guess.
        for common in (24000 / 1001, 24, 25, 30000 / 1001, 30, 50, 60000 / 1001, 60):
            if abs(average_fps - common) / common < 0.02:
                return _fps_fraction(common)
        return _fps_fraction(round(average_fps, 3))
    return None


def _is_variable_rate(gaps: list[Fraction], nominal: Fraction, average_fps: float) -> bool:
    if not gaps:
        return False
    interval = 1 / nominal
    if abs(average_fps - float(nominal)) / float(nominal) > 0.02:
        return True
    # Timebase rounding makes CFR gaps jitter by a tick (33/34 ms); a real VFR gap is far larger.
    return any(abs(gap - interval) > interval / 4 for gap in gaps)


def probe_media(path: str | os.PathLike) -> MediaInfo:
    """What a video, image or audio file holds, as the readers here will deliver it.

    Reads every packet's timestamp (no video decoding) and decodes the audio, so frame counts,
    durations and the variable-frame-rate flag are measured rather than taken from headers.
    ``width``/``height`` are after rotation (as read); ``rotation`` is the stored display-matrix angle.
    """
    path = _check_input_file(path)
    command = [
        _ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", "-i", str(path),
        "-map", "0:V:0?", "-map", "0:a:0?", "-c:v", "copy", "-c:a", "pcm_s16le",
        "-avoid_negative_ts", "disabled", "-f", "framecrc", "-",
    ]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    stderr_lines = result.stderr.splitlines()
    levels = [(m.group(1) if (m := _LEVEL_PREFIX.match(line)) else "info", _LEVEL_PREFIX.sub("", line))
              for line in stderr_lines]
    header = _parse_header([text for level, text in levels if level == "info"])
    errors = "\n".join(text for level, text in levels if level in ("error", "fatal", "panic"))
    if result.returncode != 0 or (header.video_codec is None and header.audio_codec is None):
        problem = _ffmpeg_problem(errors or result.stderr)
        if "does not contain any stream" in result.stderr or (not errors and result.returncode == 0):
            problem = "no video or audio stream found"
        raise LandmarkTalkError(f"{path}: not a readable video, image or audio file ({problem}); "
                                f"check that it is a complete media file")
    if "partial file" in errors:
        raise LandmarkTalkError(f"{path}: the file is truncated ({_ffmpeg_problem(errors)}); "
                                f"copy or export it again in full")
    if errors:
        logger.warning("%s: ffmpeg reported problems while probing: %s", path, _ffmpeg_problem(errors))

    streams = _parse_packets(result.stdout)
    has_video = header.video_codec is not None
    video = streams.get(0) if has_video else None
    audio = streams.get(1 if has_video else 0) if header.audio_codec is not None else None

    fields: dict = {"path": str(path), "container": header.container, "duration_s": header.duration_s or 0.0}
    if has_video:
        width, height = header.coded_size or (None, None)
        if header.rotation in (90, 270):
            width, height = height, width
        fields.update(width=width, height=height, video_codec=header.video_codec, rotation=header.rotation)
        is_still = video is not None and video.count == 1 and (
            header.container.endswith("_pipe") or header.container == "image2")
        if is_still:
            fields.update(frame_count=1, video_duration_s=0.0)
        elif video is not None and video.count > 0:
            span = float(video.end_s - video.start_s)
            average = (video.count / span) if span > 0 else None
            nominal = _nominal_fps(header.nominal_fps, average)
            fields.update(
                fps=float(nominal) if nominal else None,
                average_fps=average,
                video_duration_s=float(video.end_s),
                frame_count=_round_half_up(video.end_s * nominal) if nominal else video.count,
                variable_frame_rate=bool(nominal and average and _is_variable_rate(video.gaps, nominal, average)),
            )
        else:
            raise LandmarkTalkError(f"{path}: the video stream holds no frames; check that the file is complete")
    if header.audio_codec is not None:
        fields.update(audio_codec=header.audio_codec, audio_sample_rate=header.audio_sample_rate)
        if audio is not None and audio.count > 0 and audio.duration_first > 0:
            # Decoded to 16-bit PCM above: bytes per packet / (2 × samples) = channels.
            fields.update(
                audio_channels=audio.bytes_first // (2 * audio.duration_first),
                audio_duration_s=float(audio.end_s - audio.start_s),
            )
        else:
            fields.update(audio_channels=header.audio_layout_channels, audio_duration_s=0.0)
    ends = [float(s.end_s) for s in (video, audio) if s is not None and s.count > 0]
    if fields.get("frame_count") == 1 and fields.get("fps") is None and audio is None:
        fields["duration_s"] = 0.0  # a still image
    elif ends:
        fields["duration_s"] = max(ends)
    return MediaInfo(**fields)


# ---------------------------------------------------------------------------------------------- video


def _read_into(stream, buffer: np.ndarray) -> int:
    """Fill a flat uint8 buffer from a pipe; returns the bytes read (short only at end of stream)."""
    view = memoryview(buffer).cast("B")
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


def _stderr_text(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def read_video_frames(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    chunk_frames: int = 64,
    max_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Stream a video as uint8 RGB chunks [t,H,W,3] at a constant ``fps`` (default: the nominal rate).

    Variable-frame-rate sources are resampled to the constant rate; rotation metadata is applied.
    The video yields ``round(info.video_duration_s * fps)`` frames (``info.frame_count`` at the nominal rate).
    """
    if chunk_frames < 1:
        raise LandmarkTalkError(f"chunk_frames={chunk_frames}: must be at least 1")
    if max_frames is not None and max_frames < 0:
        raise LandmarkTalkError(f"max_frames={max_frames}: must be 0 or more (None reads everything)")
    if fps is not None and not fps > 0:
        raise LandmarkTalkError(f"fps={fps}: must be a positive number of frames per second")
    info = probe_media(path)
    if not info.has_video:
        raise LandmarkTalkError(f"{info.path}: has no video stream; give a video file (for a photo use read_image)")
    return _iterate_frames(info, fps=fps, chunk_frames=chunk_frames, max_frames=max_frames)


def _iterate_frames(info: MediaInfo, *, fps: float | None, chunk_frames: int, max_frames: int | None):
    def fresh_chunks():
        while True:
            # np.empty, not bytearray: no zero-fill of a buffer the pipe overwrites anyway.
            yield np.empty((chunk_frames, info.height, info.width, 3), dtype=np.uint8)

    for chunk, count in _decode_into(info, fresh_chunks(), fps=fps, max_frames=max_frames):
        yield chunk if count == len(chunk) else chunk[:count].copy()


def _decode_into(info: MediaInfo, buffers: Iterator[np.ndarray], *, fps: float | None, max_frames: int | None):
    """Decode into each buffer from ``buffers`` in turn ([t,H,W,3] uint8); yields (buffer, frames filled)."""
    path = info.path
    if not info.has_video:
        raise LandmarkTalkError(f"{path}: has no video stream; give a video file (for a photo use read_image)")
    if max_frames == 0:
        return
    rate = fps if fps is not None else info.fps
    width, height = info.width, info.height
    filters = []
    if rate is not None:
        filters.append(f"fps={_fps_fraction(rate)}:start_time=0")
    # A fixed output size keeps the raw stream aligned even if the source changes size mid-stream.
    filters.append(f"scale={width}:{height}:flags=bicubic,format=rgb24")
    command = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-i", str(path),
               "-map", "0:V:0", "-vf", ",".join(filters), "-fps_mode", "passthrough", "-an", "-sn", "-dn"]
    if max_frames is not None:
        command += ["-frames:v", str(max_frames)]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]

    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            delivered = 0
            for buffer in buffers:
                whole = _read_into(process.stdout, buffer) // frame_bytes
                if whole:
                    delivered += whole
                    yield buffer, whole
                if whole < len(buffer):
                    break
            process.stdout.close()
            returncode = process.wait()
            if returncode != 0:
                raise LandmarkTalkError(f"{path}: decoding failed after {delivered} frames "
                                        f"({_ffmpeg_problem(_stderr_text(stderr))}); check that the file is complete")
            if delivered == 0:
                raise LandmarkTalkError(f"{path}: no frames could be decoded "
                                        f"({_ffmpeg_problem(_stderr_text(stderr))}); check the file")
            problems = _stderr_text(stderr)
            if problems.strip():
                logger.warning("%s: ffmpeg reported problems while decoding: %s", path, _ffmpeg_problem(problems))
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout and not process.stdout.closed:
                process.stdout.close()


def read_video(
    path: str | os.PathLike, *, fps: float | None = None, max_frames: int | None = None
) -> tuple[np.ndarray, float]:
    """Every frame of a video, [T,H,W,3] uint8 RGB, and the constant rate they were read at."""
    info = probe_media(path)
    rate = float(fps if fps is not None else info.fps or 0.0)
    expected = info.frame_count or 0
    if fps is not None and info.video_duration_s is not None:
        expected = frame_count_for(info.video_duration_s, fps)
    if max_frames is not None:
        expected = min(expected, max_frames)
    # Decode straight into one array of the predicted size; anything beyond the prediction goes in extra chunks.
    frames = np.empty((expected, info.height or 0, info.width or 0, 3), dtype=np.uint8)

    def buffers():
        for start in range(0, expected, 32):
            yield frames[start:start + 32]
        while True:
            yield np.empty((32, info.height, info.width, 3), dtype=np.uint8)

    filled, extra = 0, []
    for buffer, count in _decode_into(info, buffers(), fps=fps, max_frames=max_frames):
        if filled < expected:
            filled += count
        else:
            extra.append(buffer[:count])
    if extra:
        logger.debug("%s: %d more frames than predicted", path, sum(len(c) for c in extra))
        return np.concatenate([frames, *extra]), rate
    return (frames if filled == expected else frames[:filled].copy()), rate


# ---------------------------------------------------------------------------------------------- image


def _composite_over_white(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(pixels.astype(np.float32) * weight + 255.0 * (1.0 - weight)).astype(np.uint8)


def _read_image_pil(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            values = np.asarray(image, dtype=np.float32)
            scale = 257.0 if image.mode.startswith("I;16") or values.max() > 255 else 1.0
            gray = np.clip(np.round(values / scale), 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
        if has_alpha:
            rgba = np.asarray(image.convert("RGBA"))
            return _composite_over_white(rgba[..., :3], rgba[..., 3])
        return np.asarray(image.convert("RGB")).copy()


def _read_image_cv2(path: Path) -> np.ndarray:
    import cv2

    # imdecode from bytes: cv2.imread cannot open non-ASCII paths on Windows.
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("OpenCV could not decode it")
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if image.shape[2] == 4:
        return _composite_over_white(image[..., 2::-1], image[..., 3])
    return np.ascontiguousarray(image[..., 2::-1])


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A still image as [H,W,3] uint8 RGB; format found from content, EXIF rotation applied, alpha over white."""
    path = _check_input_file(path)
    reasons = []
    for reader in (_read_image_pil, _read_image_cv2):
        try:
            return reader(path)
        except Exception as exc:  # noqa: BLE001 - each library signals "not mine" differently
            reasons.append(f"{reader.__name__.split('_')[-1]}: {exc}")
    raise LandmarkTalkError(f"{path}: not an image Pillow or OpenCV can read ({'; '.join(reasons)}); "
                            f"give a PNG, JPEG, WebP or BMP file")


# ---------------------------------------------------------------------------------------------- audio


def _parse_wav_header(data: bytes) -> tuple[int, int, int]:
    """(channels, sample_rate, offset of the samples) from the WAV ffmpeg writes to a pipe."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("ffmpeg did not produce WAV data")
    offset = 12
    channels = rate = None
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8], "little")
        if chunk == b"fmt ":
            channels = int.from_bytes(data[offset + 10:offset + 12], "little")
            rate = int.from_bytes(data[offset + 12:offset + 16], "little")
        elif chunk == b"data":
            if channels is None:
                raise ValueError("WAV data without a format chunk")
            return channels, rate, offset + 8
        offset += 8 + size + (size & 1)
    raise ValueError("no audio samples")


def _audio_command(path: Path, sample_rate: int | None) -> list[str]:
    """ffmpeg decoding the first audio stream of ``path`` to float32 WAV on stdout."""
    if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate < 1000):
        raise LandmarkTalkError(f"sample_rate={sample_rate}: give a whole number of Hz, 1000 or more")
    command = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-i", str(path),
               "-map", "0:a:0", "-vn", "-sn", "-dn"]
    if sample_rate is not None:
        command += ["-af", f"aresample={int(sample_rate)}:resampler=soxr"]
    return command + ["-c:a", "pcm_f32le", "-f", "wav", "-"]


def _check_audio_decode(path: Path, returncode: int, stderr: str) -> None:
    if returncode != 0:
        if "matches no streams" in stderr:
            raise LandmarkTalkError(f"{path}: has no audio stream; give a file with sound")
        raise LandmarkTalkError(f"{path}: not a readable audio or video file ({_ffmpeg_problem(stderr)}); "
                                f"check that it is a complete media file")
    if "partial file" in stderr:
        raise LandmarkTalkError(f"{path}: the file is truncated ({_ffmpeg_problem(stderr)}); "
                                f"copy or export it again in full")


def read_audio(path: str | os.PathLike, *, sample_rate: int | None = None, mono: bool = False) -> Audio:
    """The first audio stream of any audio or video file as float32 [C,N] in -1..1.

    ``sample_rate`` resamples (soxr, through ffmpeg); ``mono`` averages the channels.
    """
    path = _check_input_file(path)
    command = _audio_command(path, sample_rate)
    result = subprocess.run(command, capture_output=True)
    stderr = result.stderr.decode("utf-8", errors="replace")
    _check_audio_decode(path, result.returncode, stderr)
    try:
        channels, rate, offset = _parse_wav_header(result.stdout)
    except ValueError as exc:
        raise LandmarkTalkError(f"{path}: could not decode the audio ({exc}; {_ffmpeg_problem(stderr)})") from exc
    payload = memoryview(result.stdout)[offset:]
    usable = len(payload) // (4 * channels) * 4 * channels
    samples = np.frombuffer(payload[:usable], dtype="<f4").reshape(-1, channels).T
    if samples.shape[1] == 0:
        raise LandmarkTalkError(f"{path}: the audio track is empty (0 samples); give a file that contains sound")
    if stderr.strip():
        logger.warning("%s: ffmpeg reported problems while decoding audio: %s", path, _ffmpeg_problem(stderr))
    if mono:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if not samples.flags.writeable:  # a view of ffmpeg's bytes (one channel): give the caller its own array
        samples = samples.copy()
    return Audio(samples=samples, sample_rate=int(rate))


@dataclass(frozen=True)
class AudioFile:
    """Decoded audio kept on disk as raw little-endian float32, channels interleaved, read back by slice.

    Made by :func:`decode_audio_file`. It stands in for an :class:`~pipelines.types.Audio` where a long
    speech should not sit in memory: :class:`VideoWriter` muxes it straight from the file, and the render's
    audio features read it a stretch at a time.
    """

    path: Path
    sample_rate: int
    channels: int
    num_samples: int

    @property
    def duration_s(self) -> float:
        return self.num_samples / float(self.sample_rate)

    def load(self) -> Audio:
        """The whole file in memory, for the steps that need all of the speech at once."""
        return Audio(samples=self.read(0, self.num_samples), sample_rate=int(self.sample_rate))

    def read(self, start: int, stop: int) -> np.ndarray:
        """float32 [channels, stop - start] samples ``start..stop-1`` (clipped to the file)."""
        start = min(max(int(start), 0), self.num_samples)
        stop = min(max(int(stop), start), self.num_samples)
        with open(self.path, "rb") as handle:
            handle.seek(start * 4 * self.channels)
            data = np.fromfile(handle, dtype="<f4", count=(stop - start) * self.channels)
        return np.ascontiguousarray(data.reshape(-1, self.channels).T, dtype=np.float32)


def _decode_audio_into(path: Path, command: list[str], out: Path) -> tuple[int, int, int, str]:
    """Run the WAV-decoding ``command``, copying its samples to ``out`` block by block.

    Returns (channels, sample rate, samples written, ffmpeg's messages)."""
    block = 1 << 16
    with tempfile.TemporaryFile() as errors, open(out, "wb") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        try:
            head, parsed = b"", None
            while parsed is None and len(head) < (1 << 20):
                chunk = process.stdout.read(block)
                if not chunk:
                    break
                head += chunk
                try:
                    parsed = _parse_wav_header(head)
                except ValueError:
                    continue
            written = 0
            if parsed is not None:
                channels, rate, offset = parsed
                frame = 4 * channels
                pending = head[offset:]
                while True:
                    usable = len(pending) // frame * frame
                    samples = np.frombuffer(pending[:usable], dtype="<f4")
                    if not np.isfinite(samples).all():
                        first = written + int(np.flatnonzero(~np.isfinite(samples))[0]) // channels
                        raise LandmarkTalkError(
                            f"{path}: the audio has NaN or infinite samples (first at {first / rate:.3f} s); "
                            "re-export the audio or replace the bad samples")
                    sink.write(pending[:usable])
                    written += usable // frame
                    pending = pending[usable:]
                    chunk = process.stdout.read(block)
                    if not chunk:
                        break
                    pending += chunk
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", errors="replace")
    _check_audio_decode(path, returncode, stderr)
    if parsed is None:
        raise LandmarkTalkError(f"{path}: could not decode the audio ({_ffmpeg_problem(stderr)})")
    if written == 0:
        raise LandmarkTalkError(f"{path}: the audio track is empty (0 samples); give a file that contains sound")
    return channels, rate, written, stderr


def decode_audio_file(path: str | os.PathLike, out: str | os.PathLike, *, sample_rate: int | None = None) -> AudioFile:
    """Decode the first audio stream of ``path`` into ``out`` (raw float32) without holding it in memory.

    The samples are exactly those :func:`read_audio` returns with the same ``sample_rate``; non-finite
    samples are refused here, before any work is done with them.
    """
    path, out = _check_input_file(path), Path(out)
    command = _audio_command(path, sample_rate)
    try:
        channels, rate, written, stderr = _decode_audio_into(path, command, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    if stderr.strip():
        logger.warning("%s: ffmpeg reported problems while decoding audio: %s", path, _ffmpeg_problem(stderr))
    return AudioFile(path=out, sample_rate=int(rate), channels=int(channels), num_samples=written)


# ---------------------------------------------------------------------------------------------- write


def _discard(process: subprocess.Popen | None, paths: list[Path]) -> None:
    """Stop ffmpeg and remove temporary files; also run by the finalizer of an abandoned writer."""
    if process is not None:
        if process.stdin and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:
                pass
        if process.poll() is None:
            process.kill()
        process.wait()
    for temp in paths:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            logger.warning("could not remove temporary file %s", temp, exc_info=True)


class VideoWriter:
    """Write RGB frames to an H.264/AAC video, atomically (temp file in the target folder, then rename).

    With ``audio`` (an :class:`~pipelines.types.Audio`, or an :class:`AudioFile`, muxed straight from its
    file), the video gets exactly ``frame_count_for(audio.duration_s, fps)`` frames: extra
    frames are dropped, missing ones repeat the last frame. Odd sizes are padded to even by
    repeating the last row/column. ``preset`` is x264's speed/size trade-off.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float,
        audio: Audio | AudioFile | None = None,
        crf: int = 18,
        overwrite: bool = False,
        preset: str = "medium",
    ):
        self.path = Path(path)
        if not fps or not fps > 0:
            raise LandmarkTalkError(f"{self.path}: fps={fps} must be a positive number of frames per second")
        if not 0 <= crf <= 51:
            raise LandmarkTalkError(f"{self.path}: crf={crf} must be in 0..51 (lower is better quality; 18 looks lossless)")
        if self.path.suffix.lower() not in _VIDEO_SUFFIXES:
            raise LandmarkTalkError(f"{self.path}: cannot hold H.264 + AAC; name it .mp4 (or .mov, .mkv, .m4v)")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: already exists; choose another name or pass overwrite=True")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path.parent}: output folder does not exist; create it first")
        if isinstance(audio, AudioFile):
            if audio.channels < 1 or audio.num_samples < 1 or not audio.path.is_file():
                raise LandmarkTalkError(f"{self.path}: audio file {audio.path} is missing or empty; decode the audio again")
        elif audio is not None:
            samples = np.asarray(audio.samples)
            if samples.ndim != 2 or samples.shape[0] < 1 or samples.shape[1] == 0:
                raise LandmarkTalkError(f"{self.path}: audio must be a non-empty [C,N] waveform, got shape {samples.shape}")
            if not np.isfinite(samples).all():
                raise LandmarkTalkError(f"{self.path}: audio contains NaN or infinite samples; fix the waveform first")
        self.fps = float(fps)
        self.audio = audio
        self.crf = int(crf)
        self.preset = preset
        self.overwrite = overwrite
        self.frames_written = 0
        self.target_frames = frame_count_for(audio.duration_s, self.fps) if audio is not None else None
        self._size: tuple[int, int] | None = None  # (height, width) of the frames given
        self._last: np.ndarray | None = None
        self._process: subprocess.Popen | None = None
        self._stderr = None
        self._temps: list[Path] = []
        self._closed = False
        self._temp_video = self._reserve_temp(self.path.suffix)
        self._finalizer = weakref.finalize(self, _discard, None, self._temps)

    def _reserve_temp(self, suffix: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".partial{suffix}", dir=self.path.parent)
        os.close(handle)
        temp = Path(name)
        self._temps.append(temp)
        return temp

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self, height: int, width: int) -> None:
        fps = _fps_fraction(self.fps)
        out_width, out_height = width + (width & 1), height + (height & 1)
        command = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
                   "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{out_width}x{out_height}", "-framerate", str(fps),
                   "-i", "-"]
        if isinstance(self.audio, AudioFile):
            command += ["-f", "f32le", "-ar", str(int(self.audio.sample_rate)), "-ac", str(self.audio.channels),
                        "-i", str(self.audio.path)]
        elif self.audio is not None:
            audio_file = self._reserve_temp(".f32")
            samples = np.asarray(self.audio.samples, dtype=np.float32)
            np.ascontiguousarray(samples.T).astype("<f4").tofile(audio_file)
            command += ["-f", "f32le", "-ar", str(int(self.audio.sample_rate)), "-ac", str(samples.shape[0]),
                        "-i", str(audio_file)]
        # BT.709 matrix, tagged, so players and our reader agree on colours.
        command += ["-map", "0:v:0", "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
                    "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
                    "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
        if self.audio is not None:
            rate = int(self.audio.sample_rate)
            channels = self.audio.channels
            command += ["-map", "1:a:0", "-c:a", "aac", "-b:a", f"{min(96 * channels, 512)}k"]
            if rate not in _AAC_RATES:
                command += ["-ar", str(next((r for r in _AAC_RATES if r >= rate), 96000))]
        command += ["-movflags", "+faststart", str(self._temp_video)]
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _discard, self._process, self._temps)

    def _ffmpeg_failure(self, doing: str) -> LandmarkTalkError:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait()
        problem = _ffmpeg_problem(_stderr_text(self._stderr)) if self._stderr else "ffmpeg did not start"
        return LandmarkTalkError(f"{self.path}: ffmpeg failed while {doing} ({problem})")

    def _send(self, frames: np.ndarray) -> None:
        height, width = self._size
        if (height | width) & 1:
            # yuv420p needs even sizes; repeat the edge rather than add a black line.
            frames = np.pad(frames, ((0, 0), (0, height & 1), (0, width & 1), (0, 0)), mode="edge")
        try:
            self._process.stdin.write(np.ascontiguousarray(frames).data)
        except (BrokenPipeError, OSError) as exc:
            raise self._ffmpeg_failure("encoding frames") from exc

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames [t,H,W,3] (or one [H,W,3]); the first call fixes the size."""
        if self._closed:
            raise LandmarkTalkError(f"{self.path}: the writer is already closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise LandmarkTalkError(f"{self.path}: frames must be [t,H,W,3] RGB, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise LandmarkTalkError(f"{self.path}: frames must be uint8 0..255, got {frames.dtype}; "
                                    f"convert with (x * 255).round().clip(0, 255).astype(np.uint8)")
        if frames.shape[0] == 0:
            return
        if self._size is None:
            self._size = (int(frames.shape[1]), int(frames.shape[2]))
            self._start(*self._size)
        elif frames.shape[1:3] != self._size:
            raise LandmarkTalkError(f"{self.path}: frame size {frames.shape[2]}x{frames.shape[1]} differs from the "
                                    f"first frames' {self._size[1]}x{self._size[0]}; resize them all to one size")
        if self.target_frames is not None:
            room = self.target_frames - self.frames_written
            if room <= 0:
                return
            frames = frames[:room]
        self._send(frames)
        self.frames_written += frames.shape[0]
        self._last = frames[-1:].copy()

    def close(self) -> Path:
        """Pad to the audio's length, finish encoding and move the file into place."""
        if self._closed:
            return self.path
        try:
            if self._process is None:
                raise LandmarkTalkError(f"{self.path}: no frames were written; give at least one frame")
            missing = (self.target_frames or 0) - self.frames_written
            if missing > 0:
                logger.debug("%s: repeating the last frame %d times to match the audio", self.path, missing)
                for start in range(0, missing, 64):
                    self._send(np.repeat(self._last, min(64, missing - start), axis=0))
                self.frames_written += missing
            try:
                self._process.stdin.close()
            except (BrokenPipeError, OSError) as exc:
                raise self._ffmpeg_failure("finishing the file") from exc
            if self._process.wait() != 0:
                raise self._ffmpeg_failure("finishing the file")
            if self.path.exists() and not self.overwrite:
                raise FileExistsError(f"{self.path}: appeared while writing; choose another name or pass overwrite=True")
            os.replace(self._temp_video, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer()
        if self._stderr is not None:
            self._stderr.close()
        logger.info("wrote %s: %d frames at %g fps", self.path, self.frames_written, self.fps)
        return self.path

    def abort(self) -> None:
        """Stop encoding and remove the partial file; the target is left untouched."""
        self._closed = True
        self._finalizer()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    fps: float,
    audio: Audio | AudioFile | None = None,
    crf: int = 18,
    overwrite: bool = False,
    preset: str = "medium",
) -> Path:
    """Write frames [T,H,W,3] uint8 (or an iterable of chunks) as one video file; see :class:`VideoWriter`."""
    with VideoWriter(path, fps=fps, audio=audio, crf=crf, overwrite=overwrite, preset=preset) as writer:
        if isinstance(frames, np.ndarray):
            writer.write(frames)
        else:
            for chunk in frames:
                writer.write(chunk)
    return writer.path
