"""The decoder backends this process knows, whether each can run here, and what devices exist.

Every backend but PyAV is optional (the ``actionreel[gpu]`` extra): a spec names how to build it and
how to check it without building it, and both import their library lazily, so a machine without the
library (or without CUDA) imports this module, routes, and runs on PyAV. Tests register fake
backends here to exercise routing and fallback without a GPU.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pipeline.video.decode import FrameDecoder, PyAVDecoder

CPU, CUDA = "cpu", "cuda"


class BackendUnavailable(RuntimeError):
    """A backend cannot be built here (library missing, no CUDA device, driver too old...)."""


@dataclass(frozen=True)
class BackendSpec:
    name: str
    device: str  # CPU or CUDA: where its frames live
    build: Callable[..., FrameDecoder]  # build(threads=N); imports its library lazily
    check: Callable[[], str | None]  # None when usable here, else why not (cheap, no decoder built)
    max_bit_depth: int = 8
    chroma: tuple[str, ...] = ("420",)
    about: str = ""


@dataclass
class _Registry:
    specs: dict[str, BackendSpec] = field(default_factory=dict)
    status: dict[str, str | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_REGISTRY = _Registry()


def register_backend(spec: BackendSpec) -> None:
    with _REGISTRY.lock:
        _REGISTRY.specs[spec.name] = spec
        _REGISTRY.status.pop(spec.name, None)


def unregister_backend(name: str) -> None:
    with _REGISTRY.lock:
        _REGISTRY.specs.pop(name, None)
        _REGISTRY.status.pop(name, None)


@contextmanager
def registered(*specs: BackendSpec) -> Iterator[None]:
    """Register ``specs`` for the duration of a block (tests)."""
    for spec in specs:
        register_backend(spec)
    try:
        yield
    finally:
        for spec in specs:
            unregister_backend(spec.name)


def backend_spec(name: str) -> BackendSpec:
    try:
        return _REGISTRY.specs[name]
    except KeyError:
        raise BackendUnavailable(f"unknown decoder backend {name!r} (known: {sorted(_REGISTRY.specs)})") from None


def backend_names(device: str | None = None) -> list[str]:
    return [n for n, s in _REGISTRY.specs.items() if device is None or s.device == device]


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` can be built here; else why not. Cached per process."""
    with _REGISTRY.lock:
        if name in _REGISTRY.status:
            return _REGISTRY.status[name]
    spec = backend_spec(name)
    try:
        reason = spec.check()
    except Exception as exc:  # a broken install must not take the router down
        reason = f"{type(exc).__name__}: {exc}"
    with _REGISTRY.lock:
        _REGISTRY.status[name] = reason
    return reason


def build_backend(name: str, threads: int | None = None) -> FrameDecoder:
    """A decoder of backend ``name`` with ``threads`` CPU threads (None: the backend's default)."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailable(f"{name}: {reason}")
    return backend_spec(name).build(threads=threads)


def available_backends(device: str | None = None) -> list[str]:
    return [n for n in backend_names(device) if unavailable_reason(n) is None]


# Where a CUDA driver shows itself: the kernel module, a device node, or WSL2's GPU paravirtualization.
_DRIVER_SIGNS = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")


def cuda_device_count() -> int:
    """CUDA devices this process sees (Ray narrows CUDA_VISIBLE_DEVICES to an actor's share).

    Without a driver on the machine, or with no device visible to this process, the answer is 0
    without importing torch (1.3 s of every CPU decode actor's start)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1") or not any(map(os.path.exists, _DRIVER_SIGNS)):
        return 0
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0


def cuda_capability() -> tuple[int, int]:
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return int(major), int(minor)


def module_missing(module: str) -> str | None:
    """None when ``module`` imports; else the import error (libraries that need system FFmpeg or
    a CUDA driver fail here with the loader's message, which is what the report should say)."""
    try:
        importlib.import_module(module)
    except Exception as exc:
        return f"cannot import {module}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _needs_cuda(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if cuda_device_count() == 0:
            return "no CUDA device"
        return module_missing(module)

    return check


def _torchcodec_cuda_check() -> str | None:
    reason = _needs_cuda("torchcodec.decoders")()
    if reason is not None:
        return reason
    from pipeline.video.decode_torchcodec import cuda_unusable

    return cuda_unusable()


def _torchcodec(device: str) -> Callable[..., FrameDecoder]:
    def build(threads: int | None = None) -> FrameDecoder:
        from pipeline.video.decode_torchcodec import TorchCodecDecoder

        return TorchCodecDecoder(device=device, threads=threads)

    return build


def _nvcodec(threads: int | None = None) -> FrameDecoder:
    from pipeline.video.decode_nvcodec import NvCodecDecoder

    return NvCodecDecoder()


def _builtin_specs() -> list[BackendSpec]:
    return [
        BackendSpec("pyav", CPU, PyAVDecoder, lambda: None, 16, ("420", "422", "444", "400"),
                    "CPU, PyAV's bundled FFmpeg: the reference path, always present"),
        BackendSpec("torchcodec-cpu", CPU, _torchcodec(CPU), lambda: module_missing("torchcodec.decoders"), 16,
                    ("420", "422", "444", "400"), "CPU, torchcodec on the system FFmpeg (override only)"),
        BackendSpec("torchcodec-cuda", CUDA, _torchcodec(CUDA), _torchcodec_cuda_check, 8, ("420",),
                    "NVDEC through torchcodec; its own YUV->RGB on the GPU"),
        BackendSpec("nvcodec", CUDA, _nvcodec, _needs_cuda("PyNvVideoCodec"), 12, ("420", "444"),
                    "NVDEC through PyNvVideoCodec (NV12/P016 out, converted by pipeline.video.colour)"),
    ]


for _spec in _builtin_specs():
    register_backend(_spec)


def available_decoders() -> dict[str, Callable[..., FrameDecoder]]:
    """Backends that can be built on this machine (GPU ones when present), by name."""
    return {name: backend_spec(name).build for name in available_backends()}
