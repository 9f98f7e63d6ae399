"""PyNvVideoCodec backend (NVDEC, what NVIDIA's video curator decodes with).

Frames come out of NVDEC in their native layout (NV12, P016 for 10/12-bit, planar for 4:4:4) and are
converted to RGB by pipeline.video.colour with the stream's own matrix and range, the rule the CPU
path follows, so both paths agree on colour (checked by the GPU tests against PyAV). The decoder
needs a file path: a store on an object store is spooled to a temporary file first.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from pipeline.video.colour import ColourSpec, nv12_to_rgb, planar_to_rgb
from pipeline.video.decode import BatchedDecoder, VideoInput, checked_indices
from pipeline.video.probe import VideoError


class NvCodecDecoder(BatchedDecoder):
    name = "nvcodec"

    def __init__(self, gpu_id: int = 0, device: str | None = None) -> None:
        import PyNvVideoCodec  # optional dependency: fails here, not at import

        self._nvc = PyNvVideoCodec
        self.gpu_id = gpu_id
        self.device = device or f"cuda:{gpu_id}"  # where frames are returned: the decoding GPU

    def batches(self, video: VideoInput, indices: Sequence[int], batch_size: int,
                ) -> Iterator[tuple[list[int], torch.Tensor]]:
        wanted = checked_indices(video, indices)
        if wanted.size == 0:
            return
        spec = ColourSpec.of(video.probe)
        with _local_path(video) as path:
            decoder = self._open(video, path)
            for start in range(0, wanted.size, batch_size):
                chunk = wanted[start: start + batch_size].tolist()
                try:
                    decoded = decoder.get_batch_frames_by_index(chunk)
                except Exception as exc:  # the binding raises its own exception types
                    raise VideoError(video.uri, f"nvcodec: decode failed: {exc}") from exc
                if len(decoded) != len(chunk):
                    raise VideoError(video.uri, f"nvcodec: {len(decoded)} frames for {len(chunk)} indices")
                planes = torch.stack([_plane(torch.from_dlpack(f)) for f in decoded]).to(self.device)
                yield chunk, self._to_rgb(video, planes, spec)

    def _open(self, video: VideoInput, path: str):
        nvc = self._nvc
        try:
            decoder = nvc.SimpleDecoder(path, gpu_id=self.gpu_id, use_device_memory=True,
                                        output_color_type=nvc.OutputColorType.NATIVE)
        except Exception as exc:
            raise VideoError(video.uri, f"nvcodec: cannot open: {exc}") from exc
        if len(decoder) != video.probe.num_frames:
            raise VideoError(video.uri, f"nvcodec: sees {len(decoder)} frames, the probe {video.probe.num_frames}")
        return decoder

    @staticmethod
    def _to_rgb(video: VideoInput, planes: torch.Tensor, spec: ColourSpec) -> torch.Tensor:
        height, width = video.probe.height, video.probe.width
        rows = planes.shape[1]
        if rows == height + (height + 1) // 2:
            return nv12_to_rgb(planes, height, width, spec)
        if rows == 3 * height:
            return planar_to_rgb(planes[:, :, :width], height, width, spec)
        raise VideoError(video.uri, f"nvcodec: unexpected surface layout {tuple(planes.shape)} for {width}x{height}")


def _plane(frame: torch.Tensor) -> torch.Tensor:
    """A decoded surface as [rows, width] (bindings differ on a trailing channel axis of 1)."""
    if frame.dim() == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    return frame.clone()  # the decoder may recycle its surfaces on the next call


@contextmanager
def _local_path(video: VideoInput) -> Iterator[str]:
    source = video.open()
    if isinstance(source, str):
        yield source
        return
    with tempfile.NamedTemporaryFile(suffix=".mp4") as spool:
        try:
            shutil.copyfileobj(source, spool, 1 << 20)
        finally:
            source.close()
        spool.flush()
        yield spool.name
