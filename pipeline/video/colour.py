"""YUV -> RGB on any torch device, with the matrix and range the CPU reference path uses.

GPU decoders hand back YUV planes (NV12, P016, planar 4:4:4); converting them here rather than
trusting each library's own conversion keeps one rule for every backend. The rule is PyAV's
(swscale): the stream's colour matrix tag picks the coefficients (untagged means BT.601), the range
tag or a ``yuvj`` pixel format means full range, chroma is upsampled by repetition. A wrong matrix
costs about 12 dB (LeRobot's CUDA path measured 26 dB against its CPU path); this one matches
PyAV's 8-bit output within rounding (tested on CPU). For 10/12-bit sources FFmpeg itself filters
chroma, differently from one release to the next (5.1 and 8.1 disagree by 29-38 dB on saturated
synthetic edges), so there the test is fidelity to the source, not equality with one FFmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.video.probe import VideoProbe

# FFmpeg AVColorSpace -> (Kr, Kb). 0 (RGB) and unknown values fall back to BT.601 like swscale.
_KR_KB = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (= BT.601 625)
    6: (0.299, 0.114),  # SMPTE 170M (= BT.601 525)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
    10: (0.2627, 0.0593),  # BT.2020 constant luminance (swscale treats it like NCL)
}
BT601 = (0.299, 0.114)
MATRIX_NAMES = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
FULL_RANGE = 2  # AVCOL_RANGE_JPEG


@dataclass(frozen=True)
class ColourSpec:
    kr: float
    kb: float
    full_range: bool
    name: str

    @staticmethod
    def of(probe: VideoProbe) -> ColourSpec:
        kr, kb = _KR_KB.get(probe.colorspace, BT601)
        full = probe.color_range == FULL_RANGE or probe.pix_fmt.startswith("yuvj")
        return ColourSpec(kr, kb, full, MATRIX_NAMES.get(probe.colorspace, "bt601 (untagged)"))


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, spec: ColourSpec, unit: float = 1.0,
               ) -> torch.Tensor:
    """``y`` [N, H, W], ``u``/``v`` [N, H/sy, W/sx] (integers; ``unit``: the value of one 8-bit step,
    1 for 8-bit samples, 256 for MSB-aligned 16-bit ones such as P016) -> RGB uint8 [N, 3, H, W]."""
    height, width = y.shape[-2:]
    scale = 1.0 / unit
    yf = y.to(torch.float32) * scale
    uf = _upsample(u.to(torch.float32), height, width) * scale - 128.0
    vf = _upsample(v.to(torch.float32), height, width) * scale - 128.0
    if not spec.full_range:
        yf = (yf - 16.0) * (255.0 / 219.0)
        uf = uf * (255.0 / 224.0)
        vf = vf * (255.0 / 224.0)
    kr, kb = spec.kr, spec.kb
    kg = 1.0 - kr - kb
    r = yf + 2.0 * (1.0 - kr) * vf
    b = yf + 2.0 * (1.0 - kb) * uf
    g = yf - (2.0 * kb * (1.0 - kb) / kg) * uf - (2.0 * kr * (1.0 - kr) / kg) * vf
    return torch.stack([r, g, b], dim=1).round_().clamp_(0.0, 255.0).to(torch.uint8)


def nv12_to_rgb(frames: torch.Tensor, height: int, width: int, spec: ColourSpec) -> torch.Tensor:
    """Semi-planar 4:2:0 (NV12, or P016 when uint16) [N, H*3/2, W] -> RGB uint8 [N, 3, H, W]."""
    ch, cw = (height + 1) // 2, (width + 1) // 2
    y = frames[:, :height, :width]
    uv = frames[:, height: height + ch, : cw * 2].reshape(frames.shape[0], ch, cw, 2)
    return yuv_to_rgb(y, uv[..., 0], uv[..., 1], spec, _white(frames))


def planar_to_rgb(frames: torch.Tensor, height: int, width: int, spec: ColourSpec) -> torch.Tensor:
    """Planar 4:4:4 [N, 3*H, W] (or [N, 3, H, W]) -> RGB uint8 [N, 3, H, W]."""
    planes = frames.reshape(frames.shape[0], 3, height, width)
    return yuv_to_rgb(planes[:, 0], planes[:, 1], planes[:, 2], spec, _white(frames))


def yuv420p_to_rgb(frames: torch.Tensor, height: int, width: int, spec: ColourSpec) -> torch.Tensor:
    """Fully planar 4:2:0 as PyAV's ``to_ndarray()`` lays it out: [N, H*3/2, W] (Y, then U, then V)."""
    n, ch, cw = frames.shape[0], (height + 1) // 2, (width + 1) // 2
    flat = frames.reshape(n, -1)
    y = flat[:, : height * width].reshape(n, height, width)
    u = flat[:, height * width: height * width + ch * cw].reshape(n, ch, cw)
    v = flat[:, height * width + ch * cw: height * width + 2 * ch * cw].reshape(n, ch, cw)
    return yuv_to_rgb(y, u, v, spec, _white(frames))


def _white(frames: torch.Tensor) -> float:
    """One 8-bit step in these samples: 16-bit containers (P016, 10/12-bit in the high bits) step by 256."""
    return 256.0 if frames.dtype in (torch.uint16, torch.int16, torch.int32) else 1.0


def _upsample(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Chroma to luma size by repetition (what swscale's unscaled 8-bit YUV->RGB path does)."""
    sy, sx = -(-height // plane.shape[-2]), -(-width // plane.shape[-1])
    if sy > 1:
        plane = plane.repeat_interleave(sy, dim=-2)
    if sx > 1:
        plane = plane.repeat_interleave(sx, dim=-1)
    return plane[..., :height, :width]

