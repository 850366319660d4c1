"""The narrated video's code path on three short scenes: Chromium frames, espeak-ng narration, ffmpeg mux.

`make demo-video` records the full walkthrough the same way (minutes of work: too slow for the suite); this
records three one-sentence scenes and holds the MP4 to what the full one must be: one video, one audio and one
subtitle stream, its duration, and each scene's subtitle, speech and picture within a second of its start,
as measured in the file by ffprobe and ffmpeg.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.demo_video import HEIGHT, WIDTH, Frames, assemble, chromium, probe
from scripts.narration import SYNC_TOLERANCE_S, Cue, VideoCheckError, check_video, streams, subtitle_starts

pytestmark = pytest.mark.integration

SCENES = [
    ("1. Health", ["$ GET /health", '→ 200  {"status": "ok"}'], "First, the service says it is healthy."),
    ("2. Price", ["$ POST /predict", '→ 200  {"price_usd": 412000}'], "Then it prices one house, with bounds."),
    ("3. Done", ["✓ every step checked"], "Every step is checked, and the recording ends."),
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Frames, list]:
    folder = tmp_path_factory.mktemp("video")
    with chromium() as browser:
        frames = Frames.open(browser, folder)
        for title, lines, narration in SCENES:
            frames.scene(narration)
            frames.text(title, "a synthetic scene", lines)
        # The last scene shows two frames: each takes half of its narration.
        frames.text("3. Done, again", "a second frame", ["the end"])
    video = folder / "demo.mp4"
    report = assemble(frames.scenes, video, min_s=3, max_s=20)
    return video, frames, report


def test_one_video_one_audio_one_subtitle_stream(recorded: tuple[Path, Frames, list]) -> None:
    video, _, _ = recorded
    kinds, duration = streams(video)
    assert sorted(kinds) == ["audio", "subtitle", "video"]
    info = probe(video)
    assert (info["codec_name"], info["pix_fmt"], info["width"], info["height"]) == ("h264", "yuv420p", WIDTH, HEIGHT)
    assert 3 < duration < 20


def test_scenes_start_with_their_narration(recorded: tuple[Path, Frames, list]) -> None:
    video, frames, report = recorded
    assert len(report) == len(SCENES) == len(subtitle_starts(video))
    starts = [sync.start_s for sync in report]
    assert starts[0] == 0
    assert starts == sorted(starts)
    for sync in report:
        assert sync.subtitle_s <= SYNC_TOLERANCE_S
        assert sync.speech_s <= SYNC_TOLERANCE_S
        assert sync.picture_s <= SYNC_TOLERANCE_S
    assert [len(scene.frames) for scene in frames.scenes] == [1, 1, 2]


def test_the_check_fails_a_recording_out_of_step(recorded: tuple[Path, Frames, list]) -> None:
    video, _, report = recorded
    _, duration = streams(video)
    # The same file against a timeline whose second scene starts 2 s late: its subtitle, speech and cut are early.
    shifted = [Cue(sync.start_s + (2.0 if n == 1 else 0.0), 0.0, "") for n, sync in enumerate(report)]
    with pytest.raises(VideoCheckError, match="out of step"):
        check_video(video, shifted, min_s=3, max_s=20)
    with pytest.raises(VideoCheckError, match="long"):
        check_video(video, [Cue(s.start_s, 0.0, "") for s in report], min_s=duration + 5, max_s=duration + 10)
