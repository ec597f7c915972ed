"""The person-specific loop end to end on 2 s of a real clip: fit (a few steps), render, exact length.

Plumbing only: the models are trained for a handful of steps, so no quality is claimed here
(docs/RESULTS.md holds the real fits).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipelines.cli import main as cli_main
from pipelines.errors import LandmarkTalkError
from pipelines.media import probe_media, read_audio, read_video, write_video
from pipelines.render import RENDER_DENOISE, RENDER_MOTION_SCALE
from pipelines.types import Audio, frame_count_for
from shared_media import SHARED_DATA, SKIP_REASON

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "README.md").is_file(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    clip = SHARED_DATA / "clips" / "WDA_KatieHill_000.mp4"
    frames, fps = read_video(clip, max_frames=50)
    audio = read_audio(clip)
    short = root / "clip2s.mp4"
    write_video(short, frames, fps=fps, preset="ultrafast",
                audio=Audio(audio.samples[:, : int(audio.sample_rate * 2)], audio.sample_rate))
    models = root / "models"
    code = cli_main(["fit", str(short), "--out", str(models), "--steps", "2", "--cache-dir", str(root / "cache")])
    assert code == 0
    return short, models, root


def test_fit_writes_every_model_and_a_record(fitted):
    _, models, _ = fitted
    for name in ("face_autoencoder.safetensors", "a2l.safetensors", "l2v.safetensors", "fit.json"):
        assert (models / name).is_file(), name
    assert (models / "l2v.loss.png").is_file()
    # the tiny fit's L2V is the wider `small` preset (docs/RESULTS.md, "A wider L2V")
    from pipelines.checkpoint import load_checkpoint
    from pipelines.models.l2v import L2V_PRESETS

    config = load_checkpoint(models / "l2v.safetensors", "l2v").config
    assert (config.block_channels, config.layers_per_block) == ((64, 128), 2) == (
        L2V_PRESETS["small"].block_channels, L2V_PRESETS["small"].layers_per_block)
    # … with its landmark image drawn at 4× the latent side ("A finer landmark image")
    assert config.landmark_raster_scale == 4 == L2V_PRESETS["small"].landmark_raster_scale
    assert config.landmark_image_size == 4 * config.latent_size


@pytest.mark.parametrize("speech, seconds", [("tts_en_22k.wav", 3.0), ("bus_chinese.wav", 3.376)])
def test_render_length_follows_the_audio_exactly(fitted, speech, seconds):
    clip, models, root = fitted
    out = root / f"out_{speech}.mp4"
    code = cli_main(["render", "--face", str(clip), "--audio", str(SHARED_DATA / "audio" / speech),
                     "--models", str(models), "--out", str(out), "--steps", "2", "--crf", "30"])
    assert code == 0
    info = probe_media(out)
    assert info.frame_count == frame_count_for(seconds, 25.0)  # longer than the 2 s face video: ping-pong
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.audio_duration_s - seconds) < 1 / 25
    assert (info.width, info.height) == (512, 512)


def test_render_from_a_photo(fitted, tmp_path):
    clip, models, _ = fitted
    frames, _ = read_video(clip, max_frames=1)
    photo = tmp_path / "photo.png"
    import cv2

    cv2.imwrite(str(photo), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "photo.mp4"
    assert cli_main(["render", "--face", str(photo), "--audio", str(SHARED_DATA / "audio" / "silence_16k.wav"),
                     "--models", str(models), "--out", str(out), "--steps", "1", "--fps", "30"]) == 0
    assert probe_media(out).frame_count == 60


def test_render_cli_passes_the_motion_settings(fitted, tmp_path, monkeypatch):
    import pipelines.render as render

    clip, models, _ = fitted
    seen = []
    monkeypatch.setattr(render, "render_video", lambda face, audio, m, out, settings, **k: seen.append(settings) or out)
    args = ["render", "--face", str(clip), "--audio", str(SHARED_DATA / "audio" / "silence_16k.wav"),
            "--models", str(models), "--out", str(tmp_path / "m.mp4")]
    assert cli_main(args) == 0 and cli_main(args + ["--motion-scale", "0.5", "--no-center-motion"]) == 0
    assert (seen[0].motion_scale, seen[0].center_motion) == (RENDER_MOTION_SCALE, True)
    assert (seen[1].motion_scale, seen[1].center_motion) == (0.5, False)


def test_fit_and_render_with_a_speech_encoder(fitted, tmp_path, caplog):
    """`fit --speech-encoder` trains A2L on the encoder's hidden states and records the folder, so `render`
    finds it; refitting the folder without it refuses the kept A2L instead of mixing feature kinds."""
    pytest.importorskip("transformers", reason="the speech-encoder path needs `transformers` (requirements-dev.txt)")
    from pipelines.checkpoint import load_checkpoint
    from test_a2l_speech_encoder import save_tiny_wav2vec2

    clip, models, root = fitted
    encoder = save_tiny_wav2vec2(tmp_path / "tiny_w2v")
    out_models = tmp_path / "models"
    out_models.mkdir()
    for name in ("face_autoencoder.safetensors", "l2v.safetensors"):  # kept: only A2L is trained here
        shutil.copy(models / name, out_models / name)
    fit = ["fit", str(clip), "--out", str(out_models), "--steps", "2", "--cache-dir", str(root / "cache")]
    assert cli_main(fit + ["--speech-encoder", str(encoder)]) == 0
    assert json.loads((out_models / "fit.json").read_text())["speech_encoder"] == str(encoder.resolve())
    assert load_checkpoint(out_models / "a2l.safetensors", "a2l").config.feature_kind == "encoder:tiny_w2v"
    out = tmp_path / "encoded.mp4"
    assert cli_main(["render", "--face", str(clip), "--audio", str(SHARED_DATA / "audio" / "tts_en_22k.wav"),
                     "--models", str(out_models), "--out", str(out), "--steps", "1", "--seed-candidates", "1"]) == 0
    info = probe_media(out)
    assert info.frame_count == 75 and abs(info.audio_duration_s - 3.0) < 1 / 25
    assert cli_main(fit) == 2 and "delete a2l.safetensors" in caplog.text
    assert cli_main(["render", "--path", "dae", "--face", str(clip), "--audio", str(clip), "--models", str(out_models),
                     "--out", str(tmp_path / "d.mp4"), "--speech-encoder", str(encoder)]) == 2
    assert "only A2L reads a speech encoder" in caplog.text and not (tmp_path / "d.mp4").exists()


def test_fit_fine_tunes_a2l_from_a_given_checkpoint(fitted, tmp_path, caplog):
    """`fit --a2l-init` fine-tunes the person's A2L from a checkpoint (here the first fit's), keeping its settings."""
    from pipelines.checkpoint import load_checkpoint

    clip, models, root = fitted
    out_models = tmp_path / "models"
    out_models.mkdir()
    for name in ("face_autoencoder.safetensors", "l2v.safetensors"):  # kept: only A2L is trained here
        shutil.copy(models / name, out_models / name)
    fit = ["fit", str(clip), "--out", str(out_models), "--steps", "2", "--cache-dir", str(root / "cache"),
           "--a2l-init", str(models / "a2l.safetensors")]
    assert cli_main(fit) == 0
    record = json.loads((out_models / "fit.json").read_text())
    assert record["a2l_init"] == str((models / "a2l.safetensors").resolve()) and "a2l" in record["seconds"]
    tuned = load_checkpoint(out_models / "a2l.safetensors", "a2l")
    assert tuned.config == load_checkpoint(models / "a2l.safetensors", "a2l").config
    assert tuned.checkpoint_metadata["landmarktalk.init"] == record["a2l_init"]
    assert cli_main(fit[:-2] + ["--path", "dae", "--a2l-init", str(models / "a2l.safetensors")]) == 2
    assert "--a2l-init: only the l2v path has an A2L" in caplog.text


def test_photo_follows_the_head_motion_of_a_pose_video(fitted, tmp_path, caplog, monkeypatch):
    import cv2

    import pipelines.render as render

    # the moved photo has no mouth motion of its own: its A2L motion is never centred
    centred, original = [], render.render_talking_frames
    monkeypatch.setattr(render, "render_talking_frames",
                        lambda *a, **k: (centred.append(a[5].center_motion), original(*a, **k))[1])

    clip, models, _ = fitted
    frames, _ = read_video(clip, max_frames=1)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    # a driving video: the clip's first frame drifting right by 1 px per frame (a known head motion)
    drift = np.stack([np.roll(frames[0], t, axis=1) for t in range(25)])
    driving = tmp_path / "drive.mp4"
    write_video(driving, drift, fps=25.0, preset="ultrafast", crf=12)
    out = tmp_path / "posed.mp4"
    assert cli_main(["render", "--face", str(photo), "--audio", str(SHARED_DATA / "audio" / "silence_16k.wav"),
                     "--models", str(models), "--out", str(out), "--steps", "1", "--pose-video", str(driving),
                     "--length-mode", "loop"]) == 0
    video, fps = read_video(out)
    assert len(video) == 50 and fps == 25.0
    # the rendered head moved with the driving one: the upper face (pasted from the moved photo) shifted right
    top = slice(100, 220)
    first, later = video[0, top].astype(np.float32), video[20, top].astype(np.float32)
    errors = [np.abs(np.roll(first, k, axis=1)[:, 40:-40] - later[:, 40:-40]).mean() for k in range(0, 31)]
    assert 15 <= int(np.argmin(errors)) <= 25
    assert centred == [False]
    assert cli_main(["render", "--face", str(clip), "--audio", str(SHARED_DATA / "audio" / "silence_16k.wav"),
                     "--models", str(models), "--out", str(tmp_path / "x.mp4"), "--pose-video", str(driving)]) != 0
    assert "head motion is for a photo" in caplog.text and not (tmp_path / "x.mp4").exists()


def test_large_face_videos_are_kept_on_disk_with_the_same_result(fitted, tmp_path, monkeypatch, caplog):
    import logging
    import tempfile

    from pipelines.render import RenderSettings, load_talking_head_models, render_video

    clip, models, _ = fitted
    loaded = load_talking_head_models(models)
    speech = SHARED_DATA / "audio" / "tts_en_22k.wav"  # 3 s: longer than the 2 s video, so frames repeat
    in_memory = render_video(clip, speech, loaded, tmp_path / "memory.mp4", RenderSettings(steps=1, crf=30))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "spill"))
    (tmp_path / "spill").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with caplog.at_level(logging.INFO, logger="pipelines.render"):
        on_disk = render_video(clip, speech, loaded, tmp_path / "disk.mp4",
                               RenderSettings(steps=1, crf=30, video_in_memory_mb=0))
    assert "keeping them in a temporary folder" in caplog.text
    a, _ = read_video(in_memory)
    b, _ = read_video(on_disk)
    assert len(a) == len(b) == 75
    np.testing.assert_array_equal(a, b)
    assert list((tmp_path / "spill").iterdir()) == []  # the spilled frames are gone


def test_lower_paste_keeps_the_source_above_the_nose(fitted):
    from pipelines.face import track_face
    from pipelines.render import RenderSettings, load_talking_head_models, render_talking_frames

    clip, models, _ = fitted
    loaded = load_talking_head_models(models)
    frames, fps = read_video(clip, max_frames=16)
    track = track_face(frames, fps=fps, crop_size=loaded.l2v.config.image_size)
    speech = read_audio(SHARED_DATA / "audio" / "tts_en_22k.wav", sample_rate=16000, mono=True)
    speech = Audio(speech.samples[:, : 16000 * 16 // 25], 16000)

    def render(region):
        settings = RenderSettings(steps=1, paste_region=region)
        return np.concatenate(list(render_talking_frames(loaded, frames, track, speech, fps, settings)))

    lower, face = render("lower"), render("face")
    brows = track.landmarks[:, 17:27, 1].max(axis=1).astype(int)  # below the lowest brow point
    for t in range(len(frames)):
        assert np.array_equal(lower[t, : brows[t]], frames[t, : brows[t]])  # untouched above the brows
    assert any(not np.array_equal(face[t, : brows[t]], frames[t, : brows[t]]) for t in range(len(frames)))
    with pytest.raises(LandmarkTalkError, match="paste region"):
        next(render_talking_frames(loaded, frames, track, speech, fps, RenderSettings(paste_region="eyes")))


def test_bad_inputs_name_the_problem(fitted, tmp_path):
    from pipelines.render import RenderSettings, load_talking_head_models, render_video

    clip, models, _ = fitted
    loaded = load_talking_head_models(models)
    # A photo without a face.
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((256, 256, 3), 200, np.uint8))
    with pytest.raises(LandmarkTalkError, match="blank.png"):
        render_video(blank, SHARED_DATA / "audio" / "tts_en_22k.wav", loaded, tmp_path / "a.mp4",
                     RenderSettings(steps=1))
    # Audio shorter than one frame.
    import soundfile

    soundfile.write(tmp_path / "blip.wav", np.zeros(200, np.float32), 16000)
    with pytest.raises(LandmarkTalkError, match="shorter than one frame"):
        render_video(clip, tmp_path / "blip.wav", loaded, tmp_path / "b.mp4", RenderSettings(steps=1))
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()
    assert not list(tmp_path.glob(".*partial*"))
    # A models folder missing a file names the file and the folder.
    partial = tmp_path / "models"
    shutil.copytree(models, partial)
    (partial / "a2l.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"a2l\.safetensors.*models"):
        load_talking_head_models(partial)
    # An L2V checkpoint from another latent space is refused.
    other = tmp_path / "other"
    shutil.copytree(models, other)
    from pipelines.checkpoint import load_checkpoint, save_checkpoint

    autoencoder = load_checkpoint(other / "face_autoencoder.safetensors", "face_autoencoder")
    with __import__("torch").no_grad():
        next(autoencoder.parameters()).add_(0.01)
    save_checkpoint(autoencoder, other / "face_autoencoder.safetensors", overwrite=True)
    with pytest.raises(LandmarkTalkError, match="latent space"):
        load_talking_head_models(other)


def test_render_refuses_to_overwrite(fitted, tmp_path):
    clip, models, _ = fitted
    out = tmp_path / "mine.mp4"
    out.write_bytes(b"keep me")
    code = cli_main(["render", "--face", str(clip), "--audio", str(SHARED_DATA / "audio" / "tts_en_22k.wav"),
                     "--models", str(models), "--out", str(out), "--steps", "1"])
    assert code == 2 and out.read_bytes() == b"keep me"


def test_fit_with_holdout_scores_the_tail_beside_both_baselines(fitted, tmp_path, monkeypatch, caplog):
    """`fit --holdout` renders the held-out tail three ways and writes every figure (plumbing only)."""
    import json
    import logging

    caplog.set_level(logging.INFO, logger="pipelines.render")

    clip, _, root = fitted
    default_cache = tmp_path / "default-cache"
    monkeypatch.setenv("LANDMARKTALK_CACHE", str(default_cache))  # the hold-out must reuse --cache-dir, not this
    models = tmp_path / "models"
    code = cli_main(["fit", str(clip), "--out", str(models), "--steps", "2", "--holdout", "0.2",
                     "--render-steps", "1", "--holdout-seeds", "2", "--cache-dir", str(root / "cache")])
    assert code == 0
    report = json.loads((models / "holdout" / "holdout.json").read_text())
    assert report["holdout_frames"] == 10 and report["train_frames"] == 40 and report["eval_crop_size"] == 256
    # The CLI searches 8 seeds per run (the whole 10-frame tail is the probe), ours and the true-landmark render alike.
    assert set(report["metrics"]) == {"ours", "still", "gt_landmarks"} and report["seeds"] == [0, 8]
    assert report["seed_candidates"] == 8 and caplog.text.count("seed search over 10 probe frames") == 4
    assert report["denoise"] == RENDER_DENOISE == 0.4  # the CLI's default strength, as `render` uses
    assert report["motion_scale"] == RENDER_MOTION_SCALE == 0.75 and report["center_motion"] is True
    for name, metrics in report["metrics"].items():
        assert 0 < metrics["psnr"] < 100 and 0 < metrics["ssim"] <= 1, name
        info = probe_media(models / "holdout" / f"{name}.mp4")
        assert info.frame_count == 10 and info.audio_codec == "aac", name
    # Two noise seeds: each rendered and scored on its own, the headline figure is their mean.
    for name in ("ours", "gt_landmarks"):
        runs = report["per_seed"][name]
        assert len(runs) == 2 and runs[0]["psnr"] != runs[1]["psnr"], name
        assert report["metrics"][name]["psnr"] == pytest.approx((runs[0]["psnr"] + runs[1]["psnr"]) / 2), name
        assert report["metrics_sd"][name]["psnr"] == pytest.approx(abs(runs[0]["psnr"] - runs[1]["psnr"]) / 2 ** 0.5)
        assert probe_media(models / "holdout" / f"{name}_seed8.mp4").frame_count == 10, name
        assert json.loads((models / "holdout" / f"{name}_seed8.json").read_text())["metrics"]["psnr"] == runs[1]["psnr"]
    assert "still" not in report["per_seed"]
    side = probe_media(models / "holdout" / "side_by_side.mp4")
    assert side.frame_count == 10 and side.width == 4 * side.height  # truth | ours | still | gt_landmarks
    assert not default_cache.exists()


def test_holdout_with_a_refiner_scores_refined_renders_and_refuses_a_leaky_one(fitted, tmp_path):
    """`fit --holdout --refiner SOVQAE` refines every generated crop (figures in holdout_refined/), and refuses a
    SOVQAE fitted without that hold-out: it would have trained on the frames being scored."""
    import json

    clip, _, root = fitted
    cache = ["--cache-dir", str(root / "cache")]
    models, sharp, leaky = tmp_path / "models", tmp_path / "sovqae", tmp_path / "leaky"
    for folder, holdout in ((sharp, "0.2"), (leaky, "0")):
        assert cli_main(["fit", str(clip), "--path", "ladtalk", "--out", str(folder), "--steps", "1",
                         "--holdout", holdout, *cache]) == 0
    fit_l2v = ["fit", str(clip), "--out", str(models), "--steps", "2", "--holdout", "0.2", "--render-steps", "1", *cache]
    assert cli_main(fit_l2v + ["--refiner", str(leaky / "sovqae.safetensors")]) == 2
    assert not (models / "holdout_refined").exists()
    assert cli_main(fit_l2v + ["--refiner", str(models / "a2l.safetensors")]) == 2  # not a SOVQAE
    assert cli_main(fit_l2v + ["--refiner", str(sharp / "sovqae.safetensors")]) == 0
    report = json.loads((models / "holdout_refined" / "holdout.json").read_text())
    assert report["refiner"] == str((sharp / "sovqae.safetensors").resolve())
    assert set(report["metrics"]) == {"ours", "still", "gt_landmarks"} and report["holdout_frames"] == 10
    assert probe_media(models / "holdout_refined" / "ours.mp4").frame_count == 10


def test_fit_ladtalk_path_trains_the_sovqae_refiner(fitted, tmp_path):
    import json

    from pipelines.checkpoint import load_checkpoint

    clip, _, root = fitted
    models = tmp_path / "ladtalk"
    assert cli_main(["fit", str(clip), "--path", "ladtalk", "--out", str(models), "--steps", "2",
                     "--cache-dir", str(root / "cache")]) == 0
    record = json.loads((models / "fit.json").read_text())
    assert record["path"] == "ladtalk" and record["files"] == {"sovqae": "sovqae.safetensors"}
    assert load_checkpoint(models / "sovqae.safetensors", "sovqae").config.image_size == 128
    assert not (models / "l2v.safetensors").exists()
    with pytest.raises(LandmarkTalkError, match="--path"):
        from pipelines.fit import fit_person

        fit_person(clip, tmp_path / "x", path="wav2lip")
