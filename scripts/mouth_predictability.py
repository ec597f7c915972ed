"""How much of a person's mouth motion a linear model can predict from their speech, per clip.

    python scripts/mouth_predictability.py ../shared/data/clips/*.mp4 --features logmel phones kws \
        --kws-models DIR

A probe, not a model of the pack: for each clip, ridge regression (alpha chosen by leave-one-out) maps one
speech representation per video frame to the first 4 principal shapes of the mouth (points 48–67, every frame
laid onto the first by its skull-fixed points). It is fitted on the first 60 % of the clip and scored on the
next 20 % (the inner split of ``scripts/a2l_motion_check.py``; the held-out tail is never read). The scored
prediction is centred on the scored part's mean mouth (as a linear model's intercept would put it) and scaled
by 0.75 or 1. Figures: mouth error relative to the scored part's median mouth held still (below 1 = better
than no motion), and Pearson r of the first principal shape, predicted against true.

Speech representations (``--features``):

- ``logmel``: the pack's log-mel windows (what A2L reads), every second step of the 20-step window.
- ``phones``: visemes (14 classes) of the words that pocketsphinx recognises, each word's dictionary phones
  spread evenly over it, ±2 frames of context. Needs ``pip install pocketsphinx`` (its English acoustic
  model, dictionary and language model ship inside the package).
- ``kws``: Google's speech embedding for keyword spotting (96 dims from 760 ms of 32-band mel around each frame), from the ONNX
  files ``melspectrogram.onnx`` and ``embedding_model.onnx`` in ``--kws-models`` (openWakeWord 0.5 ships them in
  its package, Apache-2.0), ±2 frames of context. Needs ``onnxruntime``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.audio.features import _mono_16k, compute_audio_features  # noqa: E402
from pipelines.cache import load_clip_caches  # noqa: E402
from pipelines.errors import LandmarkTalkError  # noqa: E402
from pipelines.models.a2l import align_to_reference, to_canonical  # noqa: E402

_VISEMES = {
    "P": 1, "B": 1, "M": 1, "F": 2, "V": 2, "TH": 3, "DH": 3, "T": 4, "D": 4, "N": 4, "L": 4, "S": 5, "Z": 5,
    "SH": 6, "ZH": 6, "CH": 6, "JH": 6, "K": 7, "G": 7, "NG": 7, "HH": 7, "Y": 7, "R": 8, "ER": 8, "W": 9,
    "UW": 9, "UH": 9, "OW": 9, "OY": 9, "AA": 10, "AE": 10, "AH": 10, "AW": 10, "AY": 10, "AO": 11, "EH": 12,
    "EY": 12, "IH": 13, "IY": 13,
}  # everything else (silence, noise) is class 0
_SCALES = (0.75, 1.0)


def _with_context(x: np.ndarray, k: int) -> np.ndarray:
    padded = np.pad(x, ((k, k), (0, 0)), mode="edge")
    return np.concatenate([padded[i:i + len(x)] for i in range(2 * k + 1)], axis=1)


def logmel_features(cache) -> np.ndarray:
    windows = compute_audio_features(cache.audio(), cache.fps, window=20, num_frames=cache.num_frames).features
    return windows[:, ::2].reshape(cache.num_frames, -1)


def phone_features(cache) -> np.ndarray:
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as exc:
        raise LandmarkTalkError("--features phones: needs `pip install pocketsphinx`") from exc
    model = Path(get_model_path()) / "en-us"
    decoder = Decoder(hmm=str(model / "en-us"), dict=str(model / "cmudict-en-us.dict"), lm=str(model / "en-us.lm.bin"),
                      loglevel="FATAL")
    pcm = (np.clip(_mono_16k(cache.audio(), cache.source), -1, 1) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    n, fps = cache.num_frames, cache.fps
    classes = np.zeros((n, 14), np.float32)
    for segment in decoder.seg():  # 10 ms frames
        word = segment.word.split("(")[0]
        phones = (decoder.lookup_word(word) or "").split() if word.isalpha() or "'" in word else []
        edges = np.linspace(segment.start_frame, segment.end_frame + 1, len(phones) + 1) / 100 if phones else None
        for i, phone in enumerate(phones):
            start, stop = edges[i], edges[i + 1]
            for f in range(max(0, int(start * fps)), min(n, int(stop * fps) + 1)):
                overlap = min((f + 1) / fps, stop) - max(f / fps, start)
                classes[f, _VISEMES.get(phone, 0)] += max(0.0, overlap) * fps
    classes[:, 0] = np.clip(1 - classes[:, 1:].sum(axis=1), 0, 1)
    return _with_context(classes, 2)


def kws_features(cache, models: Path) -> np.ndarray:
    try:
        import onnxruntime
    except ImportError as exc:
        raise LandmarkTalkError("--features kws: needs `pip install onnxruntime`") from exc
    sessions = []
    for name in ("melspectrogram.onnx", "embedding_model.onnx"):
        if not (models / name).is_file():
            raise FileNotFoundError(f"--kws-models {models}: missing {name}; it belongs in {models}/ "
                                    "(openWakeWord 0.5 ships it in openwakeword/resources/models/)")
        sessions.append(onnxruntime.InferenceSession(str(models / name), providers=["CPUExecutionProvider"]))
    mel_model, embedding_model = sessions
    pcm = (np.clip(_mono_16k(cache.audio(), cache.source), -1, 1) * 32767).astype(np.float32)
    # openWakeWord's scaling of the ONNX mel spectrogram to the original TensorFlow model's range
    spectrum = np.squeeze(mel_model.run(None, {"input": pcm[None]})[0]) / 10 + 2  # [M, 32], 10 ms steps
    n = cache.num_frames
    index = np.rint((np.arange(n) + 0.5) / cache.fps * 100).astype(int)[:, None] + np.arange(76)[None] - 38
    windows = spectrum[np.clip(index, 0, len(spectrum) - 1)].astype(np.float32)[..., None]
    embeddings = np.concatenate([embedding_model.run(None, {"input_1": windows[i:i + 256]})[0]
                                 for i in range(0, n, 256)]).reshape(n, -1)
    return _with_context(embeddings, 2)


def probe_clip(clip: Path, features: list[str], kws_models: Path | None, cache_dir: str | None) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV

    [cache] = load_clip_caches(clip, crop_size=128, cache_dir=cache_dir)
    n = cache.num_frames
    canonical, _ = to_canonical(cache.landmarks())
    train, _ = cache.train_val_frames(0.2)
    cut = train.stop - int(round(len(train) * 0.25))
    fit, scored = np.arange(0, cut), np.arange(cut, train.stop)
    mouths = align_to_reference(canonical, canonical[0])[:, 48:68].reshape(n, -1)
    median, mean = np.median(mouths[scored], axis=0), mouths[scored].mean(axis=0)

    def error(predicted):
        return float(np.linalg.norm((mouths[scored] - predicted).reshape(len(scored), 20, 2), axis=-1).mean())

    still = error(median)
    shapes = PCA(4).fit(mouths[fit])
    sources = {"logmel": lambda: logmel_features(cache), "phones": lambda: phone_features(cache),
               "kws": lambda: kws_features(cache, kws_models)}
    row = {"frames": len(scored)}
    for name in features:
        x = sources[name]()
        ridge = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(x[fit], shapes.transform(mouths[fit]))
        coefficients = ridge.predict(x[scored])
        motion = shapes.inverse_transform(coefficients)
        motion -= motion.mean(axis=0)
        for scale in _SCALES:
            row[f"{name} ×{scale:g}"] = error(mean + scale * motion) / still
        row[f"{name} r"] = float(np.corrcoef(coefficients[:, 0], shapes.transform(mouths[scored])[:, 0])[0, 1])
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", type=Path, help="talking clips (e.g. ../shared/data/clips/*.mp4)")
    parser.add_argument("--features", nargs="+", choices=["logmel", "phones", "kws"], default=["logmel"])
    parser.add_argument("--kws-models", type=Path, default=None, help="folder with the two ONNX files (--features kws)")
    parser.add_argument("--cache-dir", default=os.environ.get("LANDMARKTALK_CACHE"))
    parser.add_argument("--out", type=Path, default=None, help="write the table and a JSON of it here")
    args = parser.parse_args()
    if "kws" in args.features and args.kws_models is None:
        parser.error("--features kws needs --kws-models DIR")
    rows = {clip.stem: probe_clip(clip, args.features, args.kws_models, args.cache_dir) for clip in args.clips}
    columns = [c for c in next(iter(rows.values())) if c != "frames"]
    lines = ["| clip (inner split) | frames | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    lines += [f"| {clip} | {row['frames']} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |"
              for clip, row in rows.items()]
    lines.append("| **mean** | | " + " | ".join(f"**{np.mean([r[c] for r in rows.values()]):.2f}**" for c in columns) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text("\n".join(lines) + "\n")
        (args.out / "report.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
