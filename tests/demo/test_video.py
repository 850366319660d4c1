"""The video pipeline on two frames: Chromium renders captioned frames, ffmpeg stitches an H.264 MP4.

The full recording (`make demo-video`, about two minutes of video) is too slow for the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.demo_video import HEIGHT, WIDTH, Frames, chromium, probe, stitch

pytestmark = pytest.mark.integration


def test_two_frames_make_an_h264_video(tmp_path: Path) -> None:
    with chromium() as browser:
        frames = Frames.open(browser, tmp_path)
        terminal = frames.text("1. A step", "what the walkthrough prints", ["$ GET /health", '→ 200  {"status": "ok"}'])
        frames.image("A screenshot", "an image frame", terminal)
    assert [path.stat().st_size > 5_000 for path, _ in frames.shown] == [True, True]

    video = tmp_path / "demo.mp4"
    stitch([(path, 1.0) for path, _ in frames.shown], video)

    info = probe(video)
    assert (info["codec_name"], info["pix_fmt"]) == ("h264", "yuv420p")
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
    assert info["duration_s"] == pytest.approx(2.0, abs=0.3)
