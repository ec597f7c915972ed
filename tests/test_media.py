"""Media I/O: probing, constant-rate reading (VFR included), images, audio, and the atomic H.264/AAC writer."""
from __future__ import annotations

import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
import torch

from pipelines.errors import LandmarkTalkError
from pipelines.media import (
    VideoWriter,
    probe_media,
    read_audio,
    read_image,
    read_video,
    read_video_frames,
    write_video,
)
from pipelines.types import Audio, frame_count_for
from shared_media import SKIP_REASON, shared_clips

CLIPS = shared_clips()
needs_clips = pytest.mark.skipif(not CLIPS, reason=SKIP_REASON)
VFR_CLIP = "vretalking_face_1.mp4"


def _synthetic_frames(count: int, height: int, width: int) -> np.ndarray:
    """Smooth gradients with a moving square: easy for H.264, so codec error stays small."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        frames[t, ..., 0] = 40 + 160 * x / max(width - 1, 1)
        frames[t, ..., 1] = 40 + 160 * y / max(height - 1, 1)
        frames[t, ..., 2] = 60 + 3 * t % 150  # a global ramp, so no two frames of a clip are alike
        top, left = (3 * t) % (height // 2), (5 * t) % (width // 2)
        frames[t, top:top + height // 4, left:left + width // 4] = (230, 60, 40)
    return frames


def _sine_audio(seconds: float, sample_rate: int, channels: int) -> Audio:
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    # Each channel its own frequency and level, so channel order and downmix are checkable.
    waves = [0.5 / (c + 1) * np.sin(2 * np.pi * (220.0 * (c + 1)) * t) for c in range(channels)]
    return Audio(samples=np.stack(waves).astype(np.float32), sample_rate=sample_rate)


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], check=True)


def _to_comfy_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T,H,W,3] → ComfyUI IMAGE: float32 [B,H,W,C] in 0..1."""
    return torch.from_numpy(frames).to(torch.float32) / 255.0


def _to_comfy_audio(audio: Audio) -> dict:
    """Audio → ComfyUI AUDIO: {"waveform": float32 [B,C,N], "sample_rate": int}."""
    return {"waveform": torch.from_numpy(audio.samples).unsqueeze(0), "sample_rate": audio.sample_rate}


def _dir_listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------- shared clips


@needs_clips
def test_probe_measures_the_variable_frame_rate_clip(shared_data):
    clip = shared_data / "clips" / VFR_CLIP
    info = probe_media(clip)
    assert info.fps == 30.0 and info.variable_frame_rate
    assert info.average_fps == pytest.approx(1350 / 61, abs=0.01)  # 135 frames over 6.100 s
    assert (info.width, info.height, info.video_codec) == (700, 700, "h264")
    # The last frame ends 6.133 s after the file start (the video starts 33 ms in).
    assert info.video_duration_s == pytest.approx(6.133, abs=0.001)
    assert info.frame_count == frame_count_for(info.video_duration_s, 30.0) == 184
    assert (info.audio_codec, info.audio_sample_rate, info.audio_channels) == ("aac", 44100, 2)
    assert info.audio_duration_s == pytest.approx(6.107, abs=0.001)


@needs_clips
def test_variable_frame_rate_is_resampled_to_a_constant_grid(shared_data):
    clip = shared_data / "clips" / VFR_CLIP
    info = probe_media(clip)
    frames, fps = read_video(clip)
    assert fps == 30.0 and len(frames) == info.frame_count
    # Every one of the 135 source frames survives; 48 long gaps and the 33 ms start offset are filled by repeats.
    changed = sum(not np.array_equal(a, b) for a, b in zip(frames[:-1], frames[1:]))
    assert changed + 1 == 135
    at_25 = sum(len(chunk) for chunk in read_video_frames(clip, fps=25, chunk_frames=50))
    assert at_25 == frame_count_for(info.video_duration_s, 25) == 153


@needs_clips
def test_constant_rate_clips_read_every_frame_once(shared_data):
    info = probe_media(shared_data / "clips" / "vretalking_face_2.mp4")
    assert not info.variable_frame_rate and info.fps == 25.0 and info.frame_count == 125
    chunks = list(read_video_frames(info.path, chunk_frames=48))
    assert [len(c) for c in chunks] == [48, 48, 29]
    assert chunks[0].shape[1:] == (844, 844, 3) and chunks[0].dtype == np.uint8
    # Reading at a rate that is not the source's follows the same round(duration × fps) rule.
    assert sum(len(c) for c in read_video_frames(info.path, fps=12.5)) == frame_count_for(info.video_duration_s, 12.5)
    first = next(iter(read_video_frames(info.path, chunk_frames=4, max_frames=3)))
    np.testing.assert_array_equal(first, chunks[0][:3])


@needs_clips
@pytest.mark.parametrize("clip", CLIPS, ids=[c.name for c in CLIPS])
def test_read_write_read_keeps_frames_fps_and_audio(clip, tmp_path):
    info = probe_media(clip)
    frames, fps = read_video(clip)
    assert len(frames) == info.frame_count and fps == info.fps
    audio = read_audio(clip)
    assert audio.sample_rate == info.audio_sample_rate and audio.channels == info.audio_channels
    assert audio.duration_s == pytest.approx(info.audio_duration_s, abs=1e-6)

    out = write_video(tmp_path / "out.mp4", frames, fps=fps, audio=audio, crf=30, preset="ultrafast")
    written = probe_media(out)
    assert (written.video_codec, written.audio_codec) == ("h264", "aac")
    assert written.fps == fps and not written.variable_frame_rate
    # Output length follows the audio; the source's own video is within one frame of that.
    assert written.frame_count == frame_count_for(audio.duration_s, fps)
    assert abs(written.frame_count - len(frames)) <= 1
    assert abs(written.audio_duration_s - audio.duration_s) <= 1.0 / fps
    assert (written.audio_sample_rate, written.audio_channels) == (audio.sample_rate, audio.channels)

    back, back_fps = read_video(out)
    assert back_fps == fps and len(back) == written.frame_count and back.shape[1:] == frames.shape[1:]
    common = min(len(back), len(frames))
    # Every 5th frame, as int16: full float copies of the clips would cost more than the codec round trip.
    sample = slice(0, common, 5)
    assert np.abs(back[sample].astype(np.int16) - frames[sample]).mean() < 8.0
    back_audio = read_audio(out)
    assert abs(back_audio.duration_s - audio.duration_s) <= 1.0 / fps


@needs_clips
def test_truncated_mp4_is_rejected_with_its_name(shared_data, tmp_path):
    data = (shared_data / "clips" / "vretalking_face_2.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    for reader in (probe_media, read_video, read_audio):
        with pytest.raises(LandmarkTalkError, match="cut.mp4") as error:
            reader(cut)
        assert "moov atom not found" in str(error.value)  # ffmpeg's own reason, without its [mov @ 0x…] prefix
        assert "@ 0x" not in str(error.value)


@needs_clips
def test_images_load_as_rgb_uint8(shared_data):
    sizes = {"art_1.png": (512, 512), "full_body_1.png": (1200, 800), "happy.png": (256, 256),
             "people_0.png": (474, 474), "sad1.png": (226, 211)}
    for path in sorted((shared_data / "images").glob("*.png")):
        image = read_image(path)
        assert image.dtype == np.uint8 and image.shape == (*sizes[path.name], 3), path.name
        assert 5 < image.mean() < 250 and image.std() > 10, path.name  # real content, not a blank


# ----------------------------------------------------------------------------------- synthetic media


def test_written_video_matches_comfyui_types(tmp_path):
    fps = 25.0
    frames = _synthetic_frames(20, 48, 64)
    audio = _sine_audio(0.8, 16000, 2)
    out = write_video(tmp_path / "clip.mp4", frames, fps=fps, audio=audio)

    back, back_fps = read_video(out)
    image = _to_comfy_image(back)
    source = _to_comfy_image(frames)
    assert image.dtype == torch.float32 and image.shape == (20, 48, 64, 3)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert float((image - source).abs().mean()) < 0.02

    sound = _to_comfy_audio(read_audio(out))
    waveform = sound["waveform"]
    assert waveform.dtype == torch.float32 and waveform.shape == (1, 2, audio.samples.shape[1])
    assert sound["sample_rate"] == 16000
    # AAC is lossy but time-aligned: the decoded sines match the source closely, channel by channel.
    assert float((waveform[0] - torch.from_numpy(audio.samples)).abs().mean()) < 0.01


def test_colours_survive_the_round_trip(tmp_path):
    # Saturated patches: a BT.601/BT.709 mix-up between writer and reader would shift them by 10-30 levels.
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
                        [255, 255, 255], [0, 0, 0], [128, 64, 32], [30, 160, 220]], dtype=np.uint8)
    strip = np.repeat(np.repeat(colours[None], 32, axis=0), 32, axis=1)  # [32, 320, 3]
    out = write_video(tmp_path / "colours.mp4", np.stack([strip] * 3), fps=10, crf=0, preset="ultrafast")
    back, _ = read_video(out)
    centres = back[1, 16, 16::32].astype(np.int16)
    assert np.abs(centres - colours).max() <= 3


def test_writer_pads_or_cuts_to_the_audio_length(tmp_path):
    audio = _sine_audio(1.0, 22050, 1)
    frames = _synthetic_frames(40, 32, 32)
    short = write_video(tmp_path / "short.mp4", frames[:10], fps=25, audio=audio, preset="ultrafast")
    long = write_video(tmp_path / "long.mp4", frames, fps=25, audio=audio, preset="ultrafast")
    for path in (short, long):
        assert probe_media(path).frame_count == 25
    padded, _ = read_video(short)
    # Every padded frame is a repeat of the last one given (frame 9), not of any other source frame.
    errors = np.abs(padded[:, None].astype(np.float32) - frames[None]).mean(axis=(2, 3, 4))  # [output, source]
    np.testing.assert_array_equal(errors.argmin(axis=1), [*range(10), *[9] * 15])
    cut, _ = read_video(long)
    errors = np.abs(cut[:, None].astype(np.float32) - frames[None]).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(errors.argmin(axis=1), range(25))  # the first 25, in order


def test_writer_without_audio_keeps_every_frame(tmp_path):
    frames = _synthetic_frames(7, 32, 48)
    with VideoWriter(tmp_path / "silent.mp4", fps=30000 / 1001, preset="ultrafast") as writer:
        for frame in frames:
            writer.write(frame)  # single [H,W,3] frames are accepted too
    info = probe_media(tmp_path / "silent.mp4")
    assert info.frame_count == 7 and not info.has_audio
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-9)


def test_odd_sizes_are_padded_to_even_by_repeating_the_edge(tmp_path):
    frames = _synthetic_frames(5, 225, 211)
    out = write_video(tmp_path / "odd.mp4", frames, fps=10, preset="ultrafast")
    back, _ = read_video(out)
    assert back.shape == (5, 226, 212, 3)
    assert np.abs(back[:, :225, :211].astype(np.float32) - frames).mean() < 3.0
    assert np.abs(back[:, :225, 211].astype(np.float32) - back[:, :225, 210]).mean() < 3.0  # no black line


def test_uncommon_sample_rates_and_six_channels_are_muxed(tmp_path):
    audio = _sine_audio(0.5, 44000, 6)  # 44 kHz is not an AAC rate: resampled up to 44.1 kHz
    out = write_video(tmp_path / "surround.mp4", _synthetic_frames(3, 32, 32), fps=10, audio=audio, preset="ultrafast")
    info = probe_media(out)
    assert (info.audio_codec, info.audio_sample_rate, info.audio_channels) == ("aac", 44100, 6)
    assert info.audio_duration_s == pytest.approx(0.5, abs=0.01) and info.frame_count == 5


def test_rotation_metadata_is_applied(tmp_path):
    frames = _synthetic_frames(4, 32, 48)
    plain = write_video(tmp_path / "plain.mp4", frames, fps=10, preset="ultrafast")
    rotated = tmp_path / "rotated.mp4"
    _ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    info = probe_media(rotated)
    assert info.rotation == 90 and (info.width, info.height) == (32, 48)
    upright, _ = read_video(plain)
    turned, _ = read_video(rotated)
    np.testing.assert_array_equal(turned, np.rot90(upright, k=1, axes=(1, 2)))  # 90° counter-clockwise


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_audio_channels_rates_resampling_and_downmix(tmp_path, channels, rate):
    source = _sine_audio(0.5, rate, channels)
    path = tmp_path / f"tone_{channels}ch_{rate}.wav"
    sf.write(path, source.samples.T, rate, subtype="PCM_16")

    info = probe_media(path)
    assert (info.audio_sample_rate, info.audio_channels) == (rate, channels)
    assert info.audio_duration_s == pytest.approx(0.5, abs=1e-9) and not info.has_video

    audio = read_audio(path)
    assert audio.samples.dtype == np.float32 and audio.samples.shape == source.samples.shape
    assert audio.samples.flags.writeable and audio.samples.flags.c_contiguous
    np.testing.assert_allclose(audio.samples, source.samples, atol=1.5 / 32768)

    mono = read_audio(path, mono=True)
    assert mono.samples.shape == (1, source.samples.shape[1])
    np.testing.assert_allclose(mono.samples[0], audio.samples.mean(axis=0), atol=1e-6)

    resampled = read_audio(path, sample_rate=16000)
    assert resampled.sample_rate == 16000 and resampled.channels == channels
    assert abs(resampled.samples.shape[1] - 8000) <= 1
    expected = _sine_audio(0.5, 16000, channels).samples
    inner = slice(400, 7600)  # away from the filter's edge effects
    if rate > 2 * 220 * channels:  # every tone is below the new Nyquist: a faithful resample reproduces it
        np.testing.assert_allclose(resampled.samples[:, inner], expected[:, inner], atol=0.01)


@pytest.mark.parametrize("suffix", ["flac", "mp3", "m4a"])
def test_compressed_audio_formats(tmp_path, suffix):
    source = _sine_audio(1.0, 44100, 2)
    wav = tmp_path / "tone.wav"
    sf.write(wav, source.samples.T, 44100)
    path = tmp_path / f"tone.{suffix}"
    _ffmpeg("-i", str(wav), str(path))
    audio = read_audio(path, sample_rate=16000, mono=True)
    assert audio.channels == 1 and audio.sample_rate == 16000
    assert audio.duration_s == pytest.approx(1.0, abs=0.06)  # mp3/AAC frame padding at most
    spectrum = np.abs(np.fft.rfft(audio.samples[0]))
    assert np.argmax(spectrum) * 16000 / audio.samples.shape[1] == pytest.approx(220, abs=3)


def test_images_any_format_alpha_over_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((6, 5, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[0, :, 3] = 0  # transparent → white
    rgba[1, :, 3] = 255  # opaque → the colour
    rgba[2:, :, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    image = read_image(tmp_path / "alpha.png")
    assert image.shape == (6, 5, 3) and image.dtype == np.uint8
    assert (image[0] == 255).all() and (image[1] == (200, 10, 10)).all()
    np.testing.assert_allclose(image[2], np.tile([228, 132, 132], (5, 1)), atol=1)

    rgb = _synthetic_frames(1, 40, 30)[0]
    Image.fromarray(rgb).save(tmp_path / "really_jpeg.png", format="JPEG", quality=95)
    assert np.abs(read_image(tmp_path / "really_jpeg.png").astype(np.float32) - rgb).mean() < 3.0

    gray16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    import cv2

    cv2.imwrite(str(tmp_path / "deep.png"), gray16)
    deep = read_image(tmp_path / "deep.png")
    assert deep.shape == (4, 5, 3)
    np.testing.assert_allclose(deep[..., 0], np.round(gray16 / 257.0), atol=1)


# ----------------------------------------------------------------------------------- bad input


def test_missing_files_raise_file_not_found_with_the_name(tmp_path):
    missing = tmp_path / "nowhere.mp4"
    for reader in (probe_media, read_video, read_video_frames, read_audio, read_image):
        with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
            reader(missing)


def test_text_files_are_rejected_with_the_name(tmp_path):
    fake = tmp_path / "speech.wav"
    fake.write_text("this is not audio\n")
    for reader in (probe_media, read_audio):
        with pytest.raises(LandmarkTalkError, match="speech.wav") as error:
            reader(fake)
        assert "Invalid data" in str(error.value)
    picture = tmp_path / "face.png"
    picture.write_text("not a picture")
    with pytest.raises(LandmarkTalkError, match="face.png.*not an image"):
        read_image(picture)


def test_empty_audio_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 2), dtype=np.float32), 16000)
    assert probe_media(empty).audio_duration_s == 0.0
    with pytest.raises(LandmarkTalkError, match="empty.wav.*empty"):
        read_audio(empty)
    with pytest.raises(LandmarkTalkError, match="non-empty"):
        VideoWriter(tmp_path / "x.mp4", fps=25, audio=Audio(np.zeros((2, 0), np.float32), 16000))


def test_video_without_audio_and_audio_without_video(tmp_path):
    silent = write_video(tmp_path / "silent.mp4", _synthetic_frames(3, 16, 16), fps=10, preset="ultrafast")
    with pytest.raises(LandmarkTalkError, match="silent.mp4.*no audio"):
        read_audio(silent)
    tone = tmp_path / "tone.wav"
    sf.write(tone, np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(LandmarkTalkError, match="tone.wav.*no video"):
        read_video(tone)


def test_truncated_faststart_file_is_reported_as_truncated(tmp_path):
    # Our own writer puts the index first, so a cut file still opens: the damage shows up as a partial file.
    full = write_video(tmp_path / "full.mp4", _synthetic_frames(60, 64, 64), fps=25,
                       audio=_sine_audio(2.4, 16000, 1), crf=10, preset="ultrafast")
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(LandmarkTalkError, match="cut.mp4.*truncated"):
        probe_media(cut)


def test_exception_mid_write_leaves_nothing_behind(tmp_path):
    frames = _synthetic_frames(8, 32, 32)
    with pytest.raises(RuntimeError, match="cancelled"):
        with VideoWriter(tmp_path / "out.mp4", fps=25, audio=_sine_audio(1.0, 16000, 1)) as writer:
            writer.write(frames)
            raise RuntimeError("cancelled")
    assert _dir_listing(tmp_path) == []


def test_writer_failures_leave_nothing_behind(tmp_path):
    frames = _synthetic_frames(4, 32, 32)
    with pytest.raises(LandmarkTalkError, match="bad.mp4.*differs"):
        with VideoWriter(tmp_path / "bad.mp4", fps=25) as writer:
            writer.write(frames)
            writer.write(_synthetic_frames(2, 16, 16))
    assert _dir_listing(tmp_path) == []
    # ffmpeg itself refusing (an unknown x264 preset) surfaces as an error naming the file.
    with pytest.raises(LandmarkTalkError, match="broken.mp4.*ffmpeg failed"):
        write_video(tmp_path / "broken.mp4", frames, fps=25, preset="no-such-preset")
    assert _dir_listing(tmp_path) == []
    with pytest.raises(LandmarkTalkError, match="uint8"):
        write_video(tmp_path / "float.mp4", frames.astype(np.float32) / 255, fps=25)
    with pytest.raises(LandmarkTalkError, match="no frames"):
        write_video(tmp_path / "nothing.mp4", np.zeros((0, 8, 8, 3), np.uint8), fps=25)
    assert _dir_listing(tmp_path) == []


def test_abandoned_writer_cleans_up(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", fps=25)
    writer.write(_synthetic_frames(3, 16, 16))
    assert any(name.endswith(".partial.mp4") for name in _dir_listing(tmp_path))  # the temp file is in the target folder
    del writer
    import gc

    gc.collect()
    assert _dir_listing(tmp_path) == []


def test_overwrite_needs_the_flag(tmp_path):
    target = tmp_path / "take.mp4"
    target.write_bytes(b"keep me")
    frames = _synthetic_frames(3, 16, 16)
    with pytest.raises(FileExistsError, match="take.mp4.*overwrite=True"):
        write_video(target, frames, fps=10)
    assert target.read_bytes() == b"keep me" and _dir_listing(tmp_path) == ["take.mp4"]
    write_video(target, frames, fps=10, overwrite=True, preset="ultrafast")
    assert probe_media(target).frame_count == 3 and _dir_listing(tmp_path) == ["take.mp4"]
