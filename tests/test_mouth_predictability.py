"""The mouth-predictability probe (scripts/mouth_predictability.py) tells a predictable mouth from an unpredictable one.

Its real-data result is negative (docs/RESULTS.md, "Other A2L levers"); this checks that the probe itself
can see predictability where it exists: on synthetic clips whose mouth opening follows the audio envelope it
scores far below the median mouth, and on the same audio with a mouth that ignores it, not below.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from test_a2l import _template, _write_cache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from mouth_predictability import probe_clip  # noqa: E402


def test_probe_finds_the_mouth_that_follows_the_audio_and_not_one_that_ignores_it(tmp_path, monkeypatch):
    cache, energy = _write_cache(tmp_path / "following", seconds=12.0, seed=0)
    row = probe_clip(cache.root, ["logmel"], None, None)
    assert row["logmel ×1"] < 0.75 and row["logmel r"] > 0.8, row

    # The same speech, with a mouth that opens and closes on a schedule of its own.
    import pipelines.cache as cache_module

    rng = np.random.default_rng(5)
    shuffled = np.repeat(rng.uniform(0, 1, len(energy) // 5 + 1), 5)[:len(energy)]
    landmarks = cache.landmarks().copy()
    centre = landmarks.mean(axis=1, keepdims=True)
    for t, opening in enumerate(shuffled):
        face = _template(0.12 * opening)
        landmarks[t, 48:68] = (face[48:68] - face.mean(axis=0)) * 36 + centre[t, 0]
    monkeypatch.setattr(cache_module.ClipCache, "landmarks", lambda self: landmarks)
    row = probe_clip(cache.root, ["logmel"], None, None)
    assert row["logmel ×1"] > 0.9 and abs(row["logmel r"]) < 0.5, row
