"""torchcodec backends: CPU (system FFmpeg) and CUDA (NVDEC), behind the FrameDecoder protocol.

Frame ``i`` must be the same picture PyAV calls frame ``i``: the decoder runs in exact seek mode
(it scans the file once), its frame count must equal the probe's, and every returned frame's
timestamp is checked against the probe's constant-rate grid. On CUDA, torchcodec may quietly decode
on the CPU when NVDEC cannot take a stream; that is refused here so the router's fallback (and its
report) handles it instead. Thread counts are explicit (torchcodec #1639: the default of one
thread was 5x slower).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from pipeline.video.decode import BatchedDecoder, VideoInput, checked_indices
from pipeline.video.probe import VideoError


class TorchCodecDecoder(BatchedDecoder):
    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        from torchcodec.decoders import VideoDecoder  # optional dependency: fails here, not at import

        self._video_decoder = VideoDecoder
        self.device = device
        self.name = "torchcodec-cuda" if device.startswith("cuda") else "torchcodec-cpu"
        self.threads = threads if threads is not None else max(1, min(4, os.cpu_count() or 1))

    def batches(self, video: VideoInput, indices: Sequence[int], batch_size: int,
                ) -> Iterator[tuple[list[int], torch.Tensor]]:
        wanted = checked_indices(video, indices)
        if wanted.size == 0:
            return
        source = video.open()
        try:
            decoder = self._open(video, source)
            for start in range(0, wanted.size, batch_size):
                chunk = wanted[start: start + batch_size]
                try:
                    batch = decoder.get_frames_at(chunk.tolist())
                except (RuntimeError, IndexError, ValueError) as exc:
                    raise VideoError(video.uri, f"{self.name}: decode failed: {exc}") from exc
                _check_timestamps(video, chunk, batch.pts_seconds)
                yield chunk.tolist(), batch.data
        finally:
            if hasattr(source, "close"):
                source.close()

    def _open(self, video: VideoInput, source):
        try:
            decoder = self._video_decoder(source, device=self.device, seek_mode="exact", dimension_order="NCHW",
                                          num_ffmpeg_threads=self.threads)
        except (RuntimeError, ValueError) as exc:
            raise VideoError(video.uri, f"{self.name}: cannot open: {exc}") from exc
        if self.device.startswith("cuda"):
            fallback = decoder.cpu_fallback
            if fallback:
                raise VideoError(video.uri, f"{self.name}: NVDEC refused the stream ({fallback})")
        if len(decoder) != video.probe.num_frames:
            raise VideoError(video.uri, f"{self.name}: sees {len(decoder)} frames, the probe {video.probe.num_frames}")
        return decoder


def _check_timestamps(video: VideoInput, indices: np.ndarray, pts_seconds: torch.Tensor) -> None:
    """Every frame must sit on the probe's grid at its index: same picture as PyAV's frame ``i``."""
    probe = video.probe
    expected = np.array([float(probe.frame_pts(int(i)) * probe.time_base) for i in indices])
    got = pts_seconds.detach().cpu().double().numpy()
    worst = np.abs(got - expected)
    if worst.size and worst.max() >= 0.5 / float(probe.fps):
        at = int(indices[int(worst.argmax())])
        raise VideoError(video.uri, f"frame {at}: decoder timestamp {got[int(worst.argmax())]:.4f} s, "
                                    f"expected {expected[int(worst.argmax())]:.4f} s")


def cuda_unusable() -> str | None:
    """None when this torchcodec build decodes on CUDA here; else why not. A PyPI wheel without CUDA
    support imports fine and fails only when asked for a CUDA decoder, so try one on a tiny clip."""
    try:
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(_tiny_h264(), device="cuda", seek_mode="exact")
        decoder.get_frames_at([0])
        if decoder.cpu_fallback:
            return f"NVDEC not used by torchcodec: {decoder.cpu_fallback}"
    except Exception as exc:
        return f"torchcodec cannot decode on CUDA: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _tiny_h264() -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((256, 256, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
