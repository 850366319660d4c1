"""The demo video's spoken narration and subtitles, and the check that they stay in step with the pictures.

Each scene's narration is synthesized first (espeak-ng, one WAV per scene) and measured; the scene's pictures
are then shown for exactly that long plus a short pad, so the timeline is known before the video exists:
`timeline` turns the measured durations into cues, from which come the narration track (the WAVs laid end to
end with the pads as silence), the SRT and the frame durations. `mux` puts video, AAC audio and a soft subtitle
track (mov_text) into one MP4. `check_video` then measures the finished file instead of trusting the plan:
its streams and duration (ffprobe), each subtitle cue as read back from the MP4, where speech actually starts
in the audio (ffmpeg's silencedetect) and where the picture changes (ffmpeg's scene score), each held to its
scene's planned start within a tolerance.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VOICE = "en-us"
WORDS_PER_MINUTE = 165
# Silence after each scene's narration: a breath between scenes, and room for silencedetect to see the gap.
PAD_S = 0.8
SYNC_TOLERANCE_S = 1.0
# Speech is anything louder than this; gaps between sentences are shorter than the gap between scenes.
SILENCE_DB = -40
SILENCE_MIN_S = 0.4
# A new frame, even one that changes only its text, scores above 0.003; H.264 noise on a still image stays below 1e-5.
CUT_SCORE = 0.001


class VideoCheckError(Exception):
    """The recording does not hold: wrong streams, duration out of range, or narration out of step."""


@dataclass(frozen=True)
class Cue:
    """One scene on the timeline: when it starts and ends, and what is said."""

    start_s: float
    end_s: float
    text: str


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed (make tools installs it)")
    return path


def synthesize(text: str, wav: Path) -> float:
    """Speak ``text`` into ``wav`` with espeak-ng; returns its duration in seconds."""
    subprocess.run([tool("espeak-ng"), "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(wav), text], check=True)
    return wav_duration(wav)


def wav_duration(wav: Path) -> float:
    with wave.open(str(wav)) as audio:
        return audio.getnframes() / audio.getframerate()


def timeline(texts: Sequence[str], durations: Sequence[float], pad_s: float = PAD_S) -> list[Cue]:
    """Scenes back to back, each as long as its narration plus the pad."""
    cues, start = [], 0.0
    for text, seconds in zip(texts, durations, strict=True):
        cues.append(Cue(start, start + seconds + pad_s, text))
        start += seconds + pad_s
    return cues


def narration_track(wavs: Sequence[Path], cues: Sequence[Cue], out: Path) -> None:
    """One WAV: each scene's narration at its cue's start, silence up to the next cue."""
    with wave.open(str(wavs[0])) as first:
        params = first.getparams()
    with wave.open(str(out), "wb") as track:
        track.setparams(params)
        for wav, cue in zip(wavs, cues, strict=True):
            with wave.open(str(wav)) as scene:
                frames = scene.readframes(scene.getnframes())
            silence = round((cue.end_s - cue.start_s) * params.framerate) - len(frames) // params.sampwidth
            track.writeframes(frames + b"\0" * (max(silence, 0) * params.sampwidth * params.nchannels))


def srt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"


def srt(cues: Sequence[Cue]) -> str:
    """SubRip subtitles, one cue per scene."""
    blocks = [f"{n}\n{srt_time(c.start_s)} --> {srt_time(c.end_s)}\n{c.text}\n" for n, c in enumerate(cues, 1)]
    return "\n".join(blocks)


def mux(video: Path, audio: Path, subtitles: Path, out: Path) -> None:
    """Video as is, the narration as AAC and the subtitles as a soft mov_text track, in one MP4."""
    subprocess.run(
        [tool("ffmpeg"), "-y", "-loglevel", "error", "-i", str(video), "-i", str(audio), "-i", str(subtitles),
         "-map", "0:v", "-map", "1:a", "-map", "2:s", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k",
         "-c:s", "mov_text", "-metadata:s:s:0", "language=eng", "-metadata:s:a:0", "language=eng",
         "-movflags", "+faststart", str(out)],
        check=True,
    )  # fmt: skip


def streams(path: Path) -> tuple[list[str], float]:
    """The codec type of each stream, and the container's duration."""
    result = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-show_entries", "stream=codec_type:format=duration", "-of", "json",
         str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(result.stdout)
    return [s["codec_type"] for s in info["streams"]], float(info["format"]["duration"])


def subtitle_starts(path: Path) -> list[float]:
    """Each subtitle cue's start, read back from the MP4's subtitle track."""
    result = subprocess.run(
        [tool("ffmpeg"), "-loglevel", "error", "-i", str(path), "-map", "0:s:0", "-f", "srt", "-"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    stamps = re.findall(r"^(\d+):(\d+):(\d+),(\d+) -->", result.stdout, flags=re.MULTILINE)
    return [int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in stamps]


def speech_onsets(path: Path) -> list[float]:
    """Where speech starts after silence in the audio track (the start counts if it is not silent)."""
    result = subprocess.run(
        [tool("ffmpeg"), "-nostats", "-i", str(path), "-map", "0:a:0",
         "-af", f"silencedetect=noise={SILENCE_DB}dB:d={SILENCE_MIN_S}", "-f", "null", "-"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    starts = [float(s) for s in re.findall(r"silence_start: (-?[\d.]+)", result.stderr)]
    ends = [float(s) for s in re.findall(r"silence_end: ([\d.]+)", result.stderr)]
    # Speech from the very start shows as no silence at 0.
    return ([] if starts and starts[0] <= 0.05 else [0.0]) + ends


def picture_cuts(path: Path) -> list[float]:
    """Where the picture changes (ffmpeg's scene score); the first frame counts as a cut."""
    result = subprocess.run(
        [tool("ffmpeg"), "-nostats", "-i", str(path), "-map", "0:v:0",
         "-vf", f"select='gt(scene,{CUT_SCORE})',showinfo", "-f", "null", "-"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [0.0] + [float(s) for s in re.findall(r"pts_time:([\d.]+)", result.stderr)]


def nearest(times: Sequence[float], target: float) -> float:
    """How far the time closest to ``target`` is from it (infinite when there is none)."""
    return min((abs(t - target) for t in times), default=float("inf"))


@dataclass(frozen=True)
class SceneSync:
    """How far the measured subtitle cue, speech onset and picture cut are from a scene's planned start."""

    start_s: float
    subtitle_s: float
    speech_s: float
    picture_s: float

    @property
    def worst_s(self) -> float:
        return max(self.subtitle_s, self.speech_s, self.picture_s)


def check_video(
    path: Path, cues: Sequence[Cue], min_s: float, max_s: float, tolerance_s: float = SYNC_TOLERANCE_S
) -> list[SceneSync]:
    """Measure the recording against its timeline; raise VideoCheckError unless it holds.

    It holds when the MP4 has one video, one audio and one subtitle stream, lasts ``min_s`` to ``max_s``,
    and each scene's subtitle cue, speech onset and picture change are within ``tolerance_s`` of its start.
    """
    kinds, duration = streams(path)
    if sorted(kinds) != ["audio", "subtitle", "video"]:
        raise VideoCheckError(f"streams {kinds}: want one video, one audio and one subtitle stream")
    if not min_s <= duration <= max_s:
        raise VideoCheckError(f"{duration:.1f} s long: want {min_s:g} to {max_s:g} s")
    subtitles = subtitle_starts(path)
    if len(subtitles) != len(cues):
        raise VideoCheckError(f"{len(subtitles)} subtitle cues for {len(cues)} scenes")
    onsets, cuts = speech_onsets(path), picture_cuts(path)
    report = [
        SceneSync(cue.start_s, abs(sub - cue.start_s), nearest(onsets, cue.start_s), nearest(cuts, cue.start_s))
        for cue, sub in zip(cues, subtitles, strict=True)
    ]
    late = [f"scene {n} at {s.start_s:.1f} s: {s}" for n, s in enumerate(report, 1) if s.worst_s > tolerance_s]
    if late:
        raise VideoCheckError("out of step by more than {:g} s: {}".format(tolerance_s, "; ".join(late)))
    return report
