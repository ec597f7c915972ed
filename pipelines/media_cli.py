"""The ``probe`` command: what a media file holds, as the engine will read it."""
from __future__ import annotations

import argparse
import json
import logging

__all__ = ["add_probe_command"]

logger = logging.getLogger(__name__)


def _format_info(info) -> str:
    lines = [f"{info.path}"]
    if info.has_video and info.fps is None:
        lines.append(f"  image: {info.width}x{info.height} {info.video_codec}, {info.frame_count} frame, rotation {info.rotation}")
    elif info.has_video:
        vfr = f" (variable frame rate, average {info.average_fps:.3f}; read at constant {info.fps:g})" if info.variable_frame_rate else ""
        lines.append(
            f"  video: {info.width}x{info.height} {info.video_codec}, {info.fps:g} fps{vfr}, "
            f"{info.frame_count} frames, {info.video_duration_s:.3f} s, rotation {info.rotation}"
        )
    else:
        lines.append("  video: none")
    if info.has_audio:
        lines.append(
            f"  audio: {info.audio_codec}, {info.audio_sample_rate} Hz, {info.audio_channels} ch, "
            f"{info.audio_duration_s:.3f} s"
        )
    else:
        lines.append("  audio: none")
    lines.append(f"  duration: {info.duration_s:.3f} s ({info.container})")
    return "\n".join(lines)


def _run_probe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .media import probe_media

    for path in args.paths:
        info = probe_media(path)
        print(json.dumps(asdict(info)) if args.json else _format_info(info))
    return 0


def add_probe_command(subparsers) -> None:
    parser = subparsers.add_parser("probe", help="print fps, frames, size, duration and audio of media files")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video, image or audio file")
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    parser.set_defaults(func=_run_probe)
