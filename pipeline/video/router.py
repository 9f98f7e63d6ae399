"""Which backend decodes a video: from its codec, chroma, bit depth and size, and the devices present.

The rules are data (NVDEC_RULES, read top-down) with the reason for each; docs/video.md has the table.
The short version:
- NVDEC only for what the card decodes: H.264 8-bit 4:2:0 (every NVDEC; 10-bit and 4:2:2/4:4:4
  H.264 only on Blackwell, which we have not verified, so CPU), HEVC 8/10/12-bit 4:2:0 (Pascal+) and
  4:4:4 (Turing+), VP9 profile 0/2 (Pascal+), AV1 8/10-bit 4:2:0 (Ampere+: A100 yes, V100/T4 no).
  4:2:2 is CPU everywhere (Blackwell only) and so is anything unlisted (MPEG-4, ProRes, ...).
- CPU below 480p: small frames decode faster on CPU cores than through a GPU round trip (LeRobot
  PR #913 measured torchcodec CUDA losing there), and the CPU path is the byte-reproducible reference.
- No CUDA device, or no GPU library importable: CPU.
- Motion JPEG (source JPEG frames kept as they are) always decodes on the CPU with libjpeg in the
  PyAV backend, whatever the override, so the frames equal what the connectors decode
  (pipeline.video.mjpeg).
- A config override names a backend outright; a GPU backend that then fails is retried on CPU and
  reported (pipeline.shards.frames), never silently swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.video.backends import CPU, CUDA, available_backends, backend_spec, cuda_capability, cuda_device_count
from pipeline.video.probe import VideoProbe
from pipeline.video.probe import _bit_depth as bit_depth_of

AUTO = "auto"
MIN_GPU_PIXELS = 640 * 480  # below this the CPU wins (LeRobot PR #913)


@dataclass(frozen=True)
class NvdecRule:
    codec: str  # FFmpeg's canonical decoder name, as the probe reports it
    chroma: str  # "420" | "422" | "444"
    max_bit_depth: int
    min_capability: tuple[int, int]  # CUDA compute capability of the first GPU generation with it
    max_width: int
    max_height: int
    why: str


NVDEC_RULES: tuple[NvdecRule, ...] = (
    NvdecRule("h264", "420", 8, (5, 0), 4096, 4096, "H.264 8-bit 4:2:0: every NVDEC since Maxwell"),
    NvdecRule("hevc", "420", 12, (6, 0), 8192, 8192, "HEVC Main/Main10/Main12 4:2:0: Pascal and later"),
    NvdecRule("hevc", "444", 12, (7, 5), 8192, 8192, "HEVC 4:4:4 (RExt): Turing and later"),
    NvdecRule("vp9", "420", 12, (6, 0), 8192, 8192, "VP9 profile 0/2 4:2:0: Pascal and later"),
    NvdecRule("av1", "420", 10, (8, 0), 8192, 8192, "AV1 Main 8/10-bit 4:2:0: Ampere and later (A100, H100)"),
)


# Codecs pinned to one backend whatever the devices, overrides or CPU choice, and why: stored source
# JPEGs decode to the connectors' pixels only through libjpeg, which only the PyAV backend uses.
PINNED_CODECS = {"mjpeg": ("pyav", "mjpeg: source JPEG frames decode with libjpeg on the CPU (the connectors' "
                                   "decoder), exactly as the passthrough stored them")}


@dataclass(frozen=True)
class Devices:
    """What this process can use: CUDA devices, the first one's compute capability, GPU libraries."""

    cuda_count: int = 0
    capability: tuple[int, int] = (0, 0)
    gpu_backends: tuple[str, ...] = ()

    @staticmethod
    def detect() -> Devices:
        count = cuda_device_count()
        if count == 0:
            return Devices()
        return Devices(count, cuda_capability(), tuple(available_backends(CUDA)))

    def to_json(self) -> dict:
        return {"cuda_count": self.cuda_count, "capability": list(self.capability),
                "gpu_backends": list(self.gpu_backends)}

    @staticmethod
    def from_json(data: dict) -> Devices:
        return Devices(int(data["cuda_count"]), tuple(data["capability"]), tuple(data["gpu_backends"]))


@dataclass(frozen=True)
class RouterConfig:
    override: str = AUTO  # a backend name forces it for every video
    min_gpu_pixels: int = MIN_GPU_PIXELS
    gpu_order: tuple[str, ...] = ("nvcodec", "torchcodec-cuda")  # first available GPU backend wins
    cpu_backend: str = "pyav"
    rules: tuple[NvdecRule, ...] = field(default=NVDEC_RULES, compare=False)


@dataclass(frozen=True)
class Route:
    backend: str
    reason: str

    @property
    def device(self) -> str:
        return backend_spec(self.backend).device


def chroma_of(pix_fmt: str) -> str:
    """"420" | "422" | "444" | "400" (grey) from an FFmpeg pixel format name."""
    name = pix_fmt.lower()
    if name.startswith(("gray", "y400")):
        return "400"
    if name.startswith(("yuv444", "yuvj444", "gbr", "rgb", "bgr")):
        return "444"
    if name.startswith(("yuv422", "yuvj422", "nv16", "p210", "p216")):
        return "422"
    return "420"


def nvdec_rule(codec: str, chroma: str, bit_depth: int, width: int, height: int, capability: tuple[int, int],
               rules: tuple[NvdecRule, ...] = NVDEC_RULES) -> tuple[NvdecRule | None, str]:
    """The rule letting NVDEC take this stream, or None and why not."""
    candidates = [r for r in rules if r.codec == codec]
    if not candidates:
        return None, f"{codec} is not decoded on NVDEC here"
    candidates = [r for r in candidates if r.chroma == chroma]
    if not candidates:
        return None, f"{codec} {chroma} chroma is not decoded on NVDEC here"
    fitting = [r for r in candidates if bit_depth <= r.max_bit_depth]
    if not fitting:
        return None, f"{codec} {bit_depth}-bit {chroma} is beyond NVDEC ({candidates[0].why})"
    rule = fitting[0]
    if tuple(capability) < rule.min_capability:
        return None, (f"{codec} {chroma} needs compute capability {rule.min_capability[0]}.{rule.min_capability[1]}+"
                      f" ({rule.why}); this GPU is {capability[0]}.{capability[1]}")
    if width > rule.max_width or height > rule.max_height:
        return None, f"{width}x{height} exceeds NVDEC's {rule.max_width}x{rule.max_height} for {codec}"
    return rule, rule.why


def route(probe: VideoProbe, devices: Devices, config: RouterConfig = RouterConfig()) -> Route:
    """The backend for one video, with the reason (recorded in the shard job's report)."""
    return route_stream(probe.codec, probe.pix_fmt, probe.bit_depth, probe.width, probe.height, devices, config)


def route_stream(codec: str, pix_fmt: str, bit_depth: int, width: int, height: int, devices: Devices,
                 config: RouterConfig = RouterConfig()) -> Route:
    if codec in PINNED_CODECS:
        return Route(*PINNED_CODECS[codec])
    if config.override != AUTO:
        backend_spec(config.override)  # unknown names fail loudly
        return Route(config.override, "config override")
    cpu = config.cpu_backend
    if devices.cuda_count == 0:
        return Route(cpu, "no CUDA device")
    if width * height < config.min_gpu_pixels:
        return Route(cpu, f"{width}x{height} is below the GPU threshold of {config.min_gpu_pixels} pixels")
    chroma = chroma_of(pix_fmt)
    rule, why = nvdec_rule(codec, chroma, bit_depth, width, height, devices.capability, config.rules)
    if rule is None:
        return Route(cpu, why)
    for name in config.gpu_order:
        if name not in devices.gpu_backends:
            continue
        spec = backend_spec(name)
        if bit_depth <= spec.max_bit_depth and chroma in spec.chroma:
            return Route(name, f"NVDEC: {why}")
    if not devices.gpu_backends:
        return Route(cpu, "no GPU decoder library importable (install actionreel[gpu])")
    return Route(cpu, f"no installed GPU backend takes {codec} {bit_depth}-bit {chroma}")


def may_use_gpu(codec: str, pix_fmt: str, width: int, height: int, config: RouterConfig = RouterConfig()) -> bool:
    """Whether a video could go to a GPU on some NVDEC card (planning, before any device is known)."""
    if codec in PINNED_CODECS:
        return backend_spec(PINNED_CODECS[codec][0]).device == CUDA
    if config.override != AUTO:
        return backend_spec(config.override).device == CUDA
    if width * height < config.min_gpu_pixels:
        return False
    best = Devices(1, (99, 0), tuple(config.gpu_order))
    chosen = route_stream(codec, pix_fmt, bit_depth_of(pix_fmt), width, height, best, config)
    return chosen.backend != config.cpu_backend


__all__ = ["AUTO", "CPU", "CUDA", "MIN_GPU_PIXELS", "NVDEC_RULES", "PINNED_CODECS", "Devices", "NvdecRule", "Route",
           "RouterConfig", "chroma_of", "may_use_gpu", "nvdec_rule", "route", "route_stream"]
