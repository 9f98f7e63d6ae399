"""Cost of checking every frame of a copied video at ingest, beside what it replaced, in one run.

    python -m bench.ingest_decode_check [--frames 300] [--height 480] [--width 640]

Columns: the old check (decode the first and last frame the episode uses), the new one
(``pipeline.video.integrity``: every packet decoded once, no colour conversion), and a full decode
to RGB for scale. Ratios are against the old check and against the full RGB decode.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.video import PyAVDecoder, VideoInput, encode_frames, probe_video
from pipeline.video.integrity import check_frames


def _video(path: Path, frames: int, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)

    def images():
        for i in range(frames):
            image = base.copy()
            image[:, (i * 7) % width] = 255
            yield image

    data, _ = encode_frames(images(), Fraction(30), width, height)
    path.write_bytes(data)


def _best(run, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        _video(path, args.frames, args.height, args.width)
        probe = probe_video(str(path), lambda: str(path))
        video = VideoInput(str(path), lambda: str(path), probe)
        last = probe.num_frames - 1

        def old() -> None:
            decoder = PyAVDecoder(threads=1)
            for index in (0, last):
                assert [i for i, _ in decoder.frames(video, [index])] == [index]

        def new() -> None:
            assert not check_frames(video).bad  # no stamp: never memoized, decoded each time

        def rgb() -> None:
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    frame.to_ndarray(format="rgb24")

        t_old, t_new, t_rgb = _best(old), _best(new), _best(rgb)
    print(f"{args.frames} frames {args.width}x{args.height} H.264")
    print(f"first+last frame decode (old check): {t_old * 1000:8.1f} ms")
    print(f"every packet, no RGB (new check):    {t_new * 1000:8.1f} ms  ({t_new / t_old:.1f}x the old check, "
          f"{args.frames / t_new:.0f} frames/s)")
    print(f"full decode to RGB (for scale):      {t_rgb * 1000:8.1f} ms  (new check = {t_new / t_rgb:.2f}x of it)")


if __name__ == "__main__":
    main()
