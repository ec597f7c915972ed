"""Memory and time of a speech encoder's A2L features: all windows at once against the render's streaming.

    python benchmarks/speech_encoder_features.py            # 30 s and 10 min of speech, a 768-dim encoder

The baseline is ``compute_audio_features(kind="encoder")``: every frame's window of hidden states held at once,
[frames, 10, 768] float32. The render instead streams them (``iter_audio_features``): it holds the hidden
states [steps, 768] and gathers 1500 frames' windows at a time; centring the motion reads the speech twice,
and the render hands both passes one run of the encoder (``encoded=``). Rows: peak traced memory (numpy
arrays; tracemalloc) while the features of the whole speech are made and consumed, and wall time; ratios
against the baseline, same process. The encoder is a random wav2vec2 with wav2vec2-base's widths (768 hidden,
512-channel feature extractor) and one transformer layer: memory depends on the widths, not on the weights.
Needs `transformers`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the pack's root is the import root


def _encoder(folder: Path):
    import torch
    import transformers

    from pipelines.audio.encoders import load_speech_encoder

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                                         intermediate_size=3072)
    transformers.Wav2Vec2Model(config).save_pretrained(folder / "w2v_base_width")
    return load_speech_encoder(folder / "w2v_base_width")


def _measure(run) -> tuple[float, float]:
    """(peak traced MiB, wall seconds) of ``run()``."""
    tracemalloc.start()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 600.0], help="speech lengths")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from pipelines.audio import compute_audio_features
    from pipelines.audio.features import encode_audio, iter_audio_features
    from pipelines.models.a2l import ENCODER_FEATURE_WINDOW
    from pipelines.types import Audio

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = _encoder(Path(tmp))
    window = {"window": ENCODER_FEATURE_WINDOW, "kind": "encoder", "encoder": encoder}
    rows = []
    for seconds in args.seconds:
        rng = np.random.default_rng(0)
        audio = Audio((rng.standard_normal((1, int(seconds * 16000))) * 0.1).astype(np.float32), 16000)

        def whole():
            features = compute_audio_features(audio, 25.0, **window).features
            float(features.sum())  # consume, as A2L would

        def streamed():  # one pass, as an uncentred render
            for part in iter_audio_features(audio, 25.0, **window):
                float(part.features.sum())

        def streamed_twice():  # two passes sharing one run of the encoder, as a centred render
            encoded = encode_audio(audio, encoder)
            for _ in range(2):
                for part in iter_audio_features(audio, 25.0, encoded=encoded, **window):
                    float(part.features.sum())

        base = _measure(whole)
        for name, run in (("all windows at once (baseline)", None), ("streamed, one pass", streamed),
                          ("streamed, two passes, one encoder run", streamed_twice)):
            peak, wall = base if run is None else _measure(run)
            rows.append((f"{seconds:g} s", name, peak, peak / base[0], wall, wall / base[1]))
    print("| speech | features | peak MiB | × baseline | wall s | × baseline |")
    print("|---|---|---:|---:|---:|---:|")
    for speech, name, peak, peak_ratio, wall, wall_ratio in rows:
        print(f"| {speech} | {name} | {peak:.0f} | {peak_ratio:.2f} | {wall:.1f} | {wall_ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
