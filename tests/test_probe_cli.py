"""`python -m pipelines probe`: what every shared clip holds, as the engine will read it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.cli import main
from pipelines.media import probe_media
from shared_media import REPO_ROOT, SKIP_REASON, shared_clips

CLIPS = shared_clips()
needs_clips = pytest.mark.skipif(not CLIPS, reason=SKIP_REASON)

# Measured independently with ffprobe (see ../shared/data/README.md): size, nominal fps, source frames,
# audio rate and channels. The VFR clip is read at 30 fps from t = 0 to 6.133 s, i.e. 184 frames.
EXPECTED = {
    "RD_Radio34_000.mp4": ("512x512", "25 fps", "200 frames", "16000 Hz, 2 ch", "8.000 s"),
    "WDA_KatieHill_000.mp4": ("512x512", "25 fps", "200 frames", "16000 Hz, 2 ch", "8.000 s"),
    "vretalking_face_1.mp4": ("700x700", "30 fps", "184 frames", "44100 Hz, 2 ch", "6.107 s"),
    "vretalking_face_2.mp4": ("844x844", "25 fps", "125 frames", "44100 Hz, 2 ch", "5.015 s"),
}


def _blocks(text: str) -> dict[str, str]:
    blocks, current = {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            current = line.rsplit("/", 1)[-1]
            blocks[current] = ""
        elif current is not None:
            blocks[current] += line + "\n"
    return blocks


@needs_clips
def test_probe_prints_every_clip(capsys):
    assert main(["probe", *map(str, CLIPS)]) == 0
    blocks = _blocks(capsys.readouterr().out)
    assert sorted(blocks) == sorted(c.name for c in CLIPS)
    for clip in CLIPS:
        text = blocks[clip.name]
        info = probe_media(clip)
        for expected in EXPECTED.get(clip.name, ()):
            assert expected in text, (clip.name, expected, text)
        assert f"{info.video_duration_s:.3f} s" in text and f"duration: {info.duration_s:.3f} s" in text
        assert "aac" in text
    assert "variable frame rate, average 22.131" in blocks["vretalking_face_1.mp4"]
    assert "variable" not in blocks["vretalking_face_2.mp4"]


@needs_clips
def test_probe_json_and_subprocess(shared_data):
    clip = shared_data / "clips" / "vretalking_face_1.mp4"
    result = subprocess.run([sys.executable, "-m", "pipelines", "probe", "--json", str(clip)],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    record = json.loads(result.stdout)
    assert record["fps"] == 30.0 and record["frame_count"] == 184 and record["variable_frame_rate"]
    assert (record["width"], record["height"], record["audio_sample_rate"], record["audio_channels"]) == (700, 700, 44100, 2)


def test_probe_reports_bad_files_without_a_traceback(tmp_path, caplog):
    fake = tmp_path / "notes.wav"
    fake.write_text("hello")
    assert main(["probe", str(tmp_path / "missing.mp4")]) == 2
    assert main(["probe", str(fake)]) == 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "missing.mp4: no such file" in messages and "notes.wav: not a readable" in messages


def test_threads_option_sets_torch_threads_before_the_command(tmp_path, caplog):
    import torch

    from pipelines.cli import main

    before = torch.get_num_threads()
    try:
        # "--threads 1 probe FILE": the 1 is the option's value, not the command
        assert main(["--threads", "1", "probe", str(tmp_path / "missing.mp4")]) != 0
        assert torch.get_num_threads() == 1
        assert "missing.mp4" in caplog.text
        assert main(["--threads", "0", "probe", str(tmp_path / "missing.mp4")]) == 2
        assert "--threads 0" in caplog.text
    finally:
        torch.set_num_threads(before)
