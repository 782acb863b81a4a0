"""Frames of a video, sampled at a chosen rate, decoded with PyAV (FFmpeg).

A colonoscopy video is scored frame by frame: frames are taken at ``fps`` per second of the
video's own timeline (presentation timestamps, so variable frame rates are handled) and
written as images, which then go through the same reader and transform as any image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg")
FRAME_QUALITY = 95  # JPEG quality of the extracted frames


class VideoError(ValueError):
    """A video cannot be opened or decoded; the message names the file."""


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Frame:
    index: int  # frame number in the decoded stream
    time: float  # seconds from the start of the video
    image: Image.Image


def check_fps(fps: float) -> None:
    """Refuse a frame rate that is not a positive finite number (a huge one takes every frame)."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise VideoError(f"--fps {fps}: expected a positive number of frames per second")


def sample_frames(path: str | Path, fps: float) -> Iterator[Frame]:
    """Frames at ``fps`` per second of video time: the first frame at or after each tick."""
    import av

    check_fps(fps)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: not a video this tool can read ({exc})") from exc
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        next_tick = 0.0
        try:
            for number, frame in enumerate(container.decode(stream)):
                time = float(frame.pts * frame.time_base) if frame.pts is not None else number
                if time + 1e-6 < next_tick:
                    continue
                yield Frame(number, round(time, 6), frame.to_image().convert("RGB"))
                # The next tick of the k/fps grid after this frame: after a long gap no burst
                # to catch up, and no loop whatever the rate.
                next_tick = max(next_tick + 1.0 / fps, (math.floor(time * fps) + 1) / fps)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path}: decoding failed after {next_tick:.1f} s ({exc})") from exc


def extract_frames(path: str | Path, fps: float, folder: Path) -> list[tuple[Path, int, float]]:
    """Write the sampled frames as JPEG files into ``folder``: (file, frame number, seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    written = []
    for frame in sample_frames(path, fps):
        file = folder / f"{stem}_{frame.index:07d}.jpg"
        frame.image.save(file, quality=FRAME_QUALITY)
        written.append((file, frame.index, frame.time))
    if not written:
        raise VideoError(f"{path}: no frame could be decoded")
    return written
