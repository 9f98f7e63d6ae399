"""A local cache of remote shards with a byte cap and least-recently-used eviction.

Several DataLoader workers (processes) share one cache folder. A shard is downloaded once, under a
temporary name, then renamed into place; a lock file serializes downloads and evictions. Evicting a
shard another worker still reads is safe on POSIX (its open handle keeps the data). The cap bounds
what the folder holds: a shard larger than the cap is not cached (it is read by ranges instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec


class ShardCache:
    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, remote: str) -> Path:
        return self.directory / f"{hashlib.sha256(remote.encode()).hexdigest()[:40]}.tar"

    def fetch(self, fs: fsspec.AbstractFileSystem, remote: str, size: int,
              retry: Callable[[Callable[[], None]], None]) -> Path | None:
        """The local copy of ``remote`` (downloaded if needed), or None when it cannot fit the cap."""
        if size > self.max_bytes:
            return None
        local = self.path_for(remote)
        if local.exists():
            os.utime(local)  # mark as recently used
            return local
        with self._locked():
            if local.exists():
                return local
            self._evict_for(size)
            temp = local.with_suffix(f".part-{os.getpid()}")
            try:
                retry(lambda: fs.get_file(remote, str(temp)))
                os.replace(temp, local)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        return local

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("*.tar"))

    def _evict_for(self, incoming: int) -> None:
        entries = sorted(((p.stat().st_mtime, p.stat().st_size, p) for p in self.directory.glob("*.tar")),
                         key=lambda e: e[0])
        used = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if used + incoming <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            used -= size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def with_retries(action: Callable[[], object], attempts: int = 5, first_delay: float = 0.2):
    """Run ``action``, retrying transient I/O errors (S3 500s, resets) with exponential backoff."""
    delay = first_delay
    for attempt in range(attempts):
        try:
            return action()
        except (OSError, TimeoutError, ConnectionError) as exc:
            if isinstance(exc, FileNotFoundError) or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
