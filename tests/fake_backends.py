"""Fake GPU decoder backends for routing and fallback tests on machines without a GPU.

Importing this module registers them (the shard job's actors import it through
``backend_modules``). Both claim the CUDA device so the router treats them as NVDEC backends:
- ``fake-nvdec-missing``: its library "fails to import" when built.
- ``fake-nvdec``: decodes with PyAV (so its output is the CPU path's, byte for byte) except for
  files that have a ``<file>.fail`` marker beside them, where it raises like a driver error.
"""

from __future__ import annotations

import os

from pipeline.video import BackendSpec, PyAVDecoder, register_backend

MISSING, FLAKY = "fake-nvdec-missing", "fake-nvdec"
FAIL_MARK = ".fail"
BUILD_ATTEMPTS: list[str] = []  # in this process: how often a fake was built (a failed import is not retried)


class FlakyDecoder:
    name = FLAKY

    def __init__(self, threads: int | None = None) -> None:
        BUILD_ATTEMPTS.append(FLAKY)
        self.inner = PyAVDecoder(threads=threads)

    def frames(self, video, indices):
        if os.path.exists(video.uri.removeprefix("file://") + FAIL_MARK):
            raise RuntimeError(f"CUDA_ERROR_INVALID_SOURCE decoding {os.path.basename(video.uri)}")
        return self.inner.frames(video, indices)


def _missing(threads: int | None = None):
    BUILD_ATTEMPTS.append(MISSING)
    raise ImportError("libnvcuvid.so.1: cannot open shared object file")


SPECS = (
    BackendSpec(MISSING, "cuda", _missing, lambda: None, 12, ("420", "444"), "test fake: import fails"),
    BackendSpec(FLAKY, "cuda", FlakyDecoder, lambda: None, 12, ("420", "444"), "test fake: fails on marked files"),
)

for _spec in SPECS:
    register_backend(_spec)
