"""Evaluation output: an HTML page with per-frame plots and sample strips, and a table across runs."""
from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import LandmarkTalkError

__all__ = ["write_html_report", "format_comparison", "METRIC_INFO"]

logger = logging.getLogger(__name__)

# name → (what it is, unit, whether higher is better); also the row order of tables.
METRIC_INFO: dict[str, tuple[str, str, bool]] = {
    "psnr": ("PSNR, full frame", "dB", True),
    "ssim": ("SSIM, full frame", "", True),
    "lpips": ("LPIPS-Alex, full frame", "", False),
    "tlp": ("tLP (TecoGAN), full frame", "", False),
    "pixel_mse": ("Pixel-MSE of consecutive frames, full frame (a frozen video scores 0: read beside gt's)",
                  "0..1²", False),
    "pixel_mse_gt": ("… of the ground truth (reference)", "0..1²", False),
    "fid": ("FID (Inception pool features), full frame", "", False),
    "face_psnr": ("PSNR, face crop", "dB", True),
    "face_ssim": ("SSIM, face crop", "", True),
    "face_lpips": ("LPIPS-Alex, face crop", "", False),
    "face_tlp": ("tLP, face crop", "", False),
    "face_pixel_mse": ("Pixel-MSE, face crop", "0..1²", False),
    "face_pixel_mse_gt": ("… of the ground truth (reference)", "0..1²", False),
    "face_fid": ("FID, face crop", "", False),
    "m_lmd": ("M-LMD, mouth landmarks 48–67", "crop px", False),
    "f_lmd": ("F-LMD, all 68 landmarks", "crop px", False),
    "pred_face_found": ("frames where a face was found in pred", "fraction", True),
    "lip_audio_corr": ("lip opening ~ audio RMS, Pearson r (empty: the mouth barely moves)", "", True),
    "lip_audio_corr_gt": ("… of the ground truth (reference)", "", True),
    "lse_c": ("LSE-C, SyncNet confidence", "", True),
    "lse_d": ("LSE-D, SyncNet distance", "", False),
    "av_offset": ("audio-video offset SyncNet finds", "frames", True),
    "lse_c_gt": ("LSE-C of the ground truth (reference)", "", True),
    "lse_d_gt": ("LSE-D of the ground truth (reference)", "", False),
    "av_offset_gt": ("… of the ground truth (reference)", "frames", True),
}
# Rows that describe the ground truth or are not better one way: no arrow, no "best" mark.
_REFERENCE_ROWS = {"pixel_mse_gt", "face_pixel_mse_gt", "lip_audio_corr_gt", "lse_c_gt", "lse_d_gt", "av_offset",
                   "av_offset_gt"}


def _format(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}" if magnitude < 10 else f"{value:.2f}"


def _ordered(names) -> list[str]:
    known = [n for n in METRIC_INFO if n in names]
    return known + sorted(n for n in names if n not in METRIC_INFO)


def _load_run(path: Path) -> tuple[str, dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such evaluation file; write one with `evaluate --json`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        metrics = dict(data["metrics"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LandmarkTalkError(f"{path}: not an evaluation JSON written by `evaluate --json` ({exc})") from exc
    return data.get("label") or path.stem, metrics


def format_comparison(runs: list) -> str:
    """A plain-text table of summary metrics, one column per run.

    ``runs``: evaluation JSON files (``evaluate --json``) or result dicts from ``evaluate_videos``.
    """
    if not runs:
        raise LandmarkTalkError("compare: give at least one evaluation JSON file")
    sources = [r.get("pred", "") if isinstance(r, dict) else r for r in runs]
    runs = [(r.get("label", "run"), r["metrics"]) if isinstance(r, dict) else _load_run(Path(r)) for r in runs]
    labels = [label for label, _ in runs]
    for i, label in enumerate(labels):  # two runs of the same name: tell them apart by file name
        if labels.count(label) > 1:
            labels[i] = f"{label} ({Path(sources[i]).name})"
    names = _ordered({name for _, metrics in runs for name in metrics})
    header = ["metric", "", *labels]
    rows = []
    for name in names:
        info = METRIC_INFO.get(name)
        arrow = "" if info is None or name in _REFERENCE_ROWS else ("↑" if info[2] else "↓")
        values = [metrics.get(name) for _, metrics in runs]
        cells = [_format(v) for v in values]
        finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if arrow and len(finite) > 1 and len(set(finite)) > 1:
            best = max(finite) if info[2] else min(finite)
            cells = [c + " *" if v == best else c for c, v in zip(cells, values)]
        rows.append([name, arrow, *cells])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("* best of the runs; ↑ higher is better, ↓ lower is better")
    return "\n".join(lines)


def _plot_per_frame(per_frame: dict[str, np.ndarray], fps: float, path: Path) -> bool:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    panels = [
        ("PSNR (dB)", [("psnr", "full frame"), ("face_psnr", "face crop")]),
        ("SSIM", [("ssim", "full frame"), ("face_ssim", "face crop")]),
        ("LPIPS", [("lpips", "full frame"), ("face_lpips", "face crop")]),
        ("landmark distance (crop px)", [("m_lmd", "M-LMD mouth"), ("f_lmd", "F-LMD face")]),
        ("lip opening / audio", [("lip_opening", "pred lip opening"), ("lip_opening_gt", "gt lip opening"),
                                 ("audio_rms", "audio RMS (scaled)")]),
    ]
    panels = [(title, [(k, lab) for k, lab in lines if k in per_frame]) for title, lines in panels]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return False
    figure = Figure(figsize=(10, 2.4 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axis, (title, lines) in zip(axes, panels):
        for key, label in lines:
            values = np.asarray(per_frame[key], np.float64)
            if key == "audio_rms" and "lip_opening" in per_frame:
                # Drawn on the lip-opening scale so the two shapes can be compared by eye.
                peak, lip_peak = np.nanmax(values), np.nanmax(per_frame["lip_opening"])
                if np.isfinite(peak) and peak > 0 and np.isfinite(lip_peak):
                    values = values / peak * lip_peak
            axis.plot(np.arange(len(values)) / fps, values, label=label, linewidth=1)
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("time (s)")
    figure.savefig(path, dpi=90)
    return True


def _write_strip(strip: dict, path: Path, height: int = 256) -> None:
    """gt | pred for one frame (and gt face | pred face when present), scaled to ``height``."""
    tiles = [strip["gt"], strip["pred"]] + ([strip["gt_face"], strip["pred_face"]] if "gt_face" in strip else [])
    scaled = [cv2.resize(t, (max(1, round(t.shape[1] * height / t.shape[0])), height), interpolation=cv2.INTER_AREA)
              for t in tiles]
    gap = np.full((height, 4, 3), 255, np.uint8)
    row = np.concatenate([piece for tile in scaled for piece in (tile, gap)][:-1], axis=1)
    cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))


def write_html_report(result: dict, report_dir: str | os.PathLike, *, strips: list[dict] = ()) -> Path:
    """``index.html`` with the metric table, per-frame plots and gt | pred strips; also ``per_frame.csv``."""
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    per_frame = result.get("per_frame", {})
    has_plot = _plot_per_frame(per_frame, result["fps"], folder / "per_frame.png")

    with open(folder / "per_frame.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        names = list(per_frame)
        writer.writerow(["frame", "time_s", *names])
        for i in range(result["frames"]):
            writer.writerow([i, f"{i / result['fps']:.4f}",
                             *(_format_csv(per_frame[n][i]) if i < len(per_frame[n]) else "" for n in names)])

    strip_names = []
    for strip in strips:
        name = f"strip_{strip['index']:06d}.png"
        _write_strip(strip, folder / name)
        strip_names.append((strip["index"], name, "gt_face" in strip))

    rows = []
    for name in _ordered(result["metrics"]):
        what, unit, higher = METRIC_INFO.get(name, (name, "", True))
        arrow = "" if name in _REFERENCE_ROWS or name not in METRIC_INFO else ("↑" if higher else "↓")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(what)}</td><td>{arrow}</td>"
                    f"<td class=n>{_format(result['metrics'][name])}</td><td>{html.escape(unit)}</td></tr>")
    skipped = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in result["skipped"].items())
    figures = "".join(
        f"<figure><img src=\"{n}\" alt=\"frame {i}\"><figcaption>frame {i} ({i / result['fps']:.2f} s): "
        f"gt | pred{' | gt face | pred face' if face else ''}</figcaption></figure>"
        for i, n, face in strip_names)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>LandmarkTalk evaluation: {html.escape(result['label'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}td{{padding:2px 10px}}td.n{{text-align:right;
font-family:monospace}}img{{max-width:100%}}figure{{margin:1em 0}}</style></head><body>
<h1>Evaluation: {html.escape(result['label'])}</h1>
<p>pred <code>{html.escape(result['pred'])}</code> against gt <code>{html.escape(result['gt'])}</code>:
{result['frames']} frames at {result['fps']:g} fps, frames {result['frame_size'][1]}×{result['frame_size'][0]},
face crop {result['crop_size']}². Per-frame values: <a href="per_frame.csv">per_frame.csv</a>.</p>
<h2>Metrics</h2><table><tr><th>name</th><th>metric</th><th></th><th>value</th><th>unit</th></tr>{''.join(rows)}</table>
<h2>Not computed</h2><ul>{skipped or '<li>none</li>'}</ul>
<h2>Per frame</h2>{'<img src="per_frame.png" alt="per-frame metrics">' if has_plot else '<p>no per-frame series</p>'}
<h2>Sample frames</h2>{figures or '<p>none</p>'}
</body></html>
"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    logger.info("wrote report %s", index)
    return index


def _format_csv(value) -> str:
    return "" if not np.isfinite(value) else f"{float(value):.6g}"
