"""Clip cache: written atomically, read back exactly, split by time, refuses to clobber."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.cache import load_clip_caches, write_clip_cache
from pipelines.errors import LandmarkTalkError
from pipelines.types import Audio, FaceTrack


def _synthetic(t=30, size=32):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (t, size, size, 3), dtype=np.uint8)
    landmarks = rng.uniform(0, size, (t, 68, 2)).astype(np.float32)
    transforms = np.tile(np.array([[0.5, 0, 1], [0, 0.5, 2]], np.float32), (t, 1, 1))
    track = FaceTrack(landmarks=landmarks * 2, confidence=np.ones(t, np.float32), transforms=transforms,
                      crop_size=size, frame_size=(64, 80), fps=25.0, filled=np.zeros(t, bool))
    audio = Audio(samples=rng.standard_normal((2, 48000 * t // 25)).astype(np.float32) * 0.1, sample_rate=48000)
    return crops, landmarks, track, audio


def test_round_trip_resamples_audio_and_keeps_arrays(tmp_path):
    crops, landmarks, track, audio = _synthetic()
    cache = write_clip_cache(tmp_path / "c", crops=crops, landmarks=landmarks, track=track, audio=audio, fps=25.0,
                             source="clip.mp4")
    assert (cache.num_frames, cache.crop_size, cache.fps) == (30, 32, 25.0)
    assert np.array_equal(cache.crops(), crops)
    assert np.array_equal(cache.landmarks(), landmarks)
    back = cache.track()
    assert back.frame_size == (64, 80) and np.array_equal(back.transforms, track.transforms)
    a = cache.audio()
    assert a.sample_rate == 16000 and a.samples.shape == (1, 16000 * 30 // 25)
    [again] = load_clip_caches(tmp_path / "c")
    assert again == cache
    assert load_clip_caches(tmp_path) == [cache]  # a folder of caches
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary folder left


def test_time_split_and_bad_holdout(tmp_path):
    crops, landmarks, track, audio = _synthetic(t=50)
    cache = write_clip_cache(tmp_path / "c", crops=crops, landmarks=landmarks, track=track, audio=audio, fps=25.0,
                             source="x")
    train, val = cache.train_val_frames(0.2)
    assert (train, val) == (range(0, 40), range(40, 50))
    with pytest.raises(LandmarkTalkError, match="holdout 1.5"):
        cache.train_val_frames(1.5)


def test_refuses_to_overwrite_and_rejects_bad_arrays(tmp_path):
    crops, landmarks, track, audio = _synthetic()
    write_clip_cache(tmp_path / "c", crops=crops, landmarks=landmarks, track=track, audio=audio, fps=25.0, source="x")
    with pytest.raises(FileExistsError, match="c"):
        write_clip_cache(tmp_path / "c", crops=crops, landmarks=landmarks, track=track, audio=audio, fps=25.0,
                         source="x")
    with pytest.raises(LandmarkTalkError, match="crops"):
        write_clip_cache(tmp_path / "d", crops=crops.astype(np.float32), landmarks=landmarks, track=track,
                         audio=audio, fps=25.0, source="x")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_clip_caches(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LandmarkTalkError, match="no clips"):
        load_clip_caches(tmp_path / "empty")
