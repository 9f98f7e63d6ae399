"""Transient object-storage faults: retried with backoff, and counted.

S3 answers a busy prefix with ``503 SlowDown`` and drops connections now and then; a 10-hour job
must ride both out. The retrying is botocore's own ("standard" mode: exponential backoff with full
jitter on throttling codes, 5xx answers and connection errors, up to ``MAX_ATTEMPTS`` tries per
request), configured on every S3 filesystem the store opens. What this module adds is the count: a
``response-received`` hook on the botocore session sees every attempt, so each throttled or failed
attempt is tallied by kind in a per-process counter. aiohttp's quiet resend of an idempotent
request whose kept-alive connection dropped is turned off (``pipeline.store.s3session``), so a
reset goes through the same counted, backed-off retry as a throttled answer. Jobs take the difference of ``snapshot()``
before and after their work (in the driver and in each Ray task) and add it to their report.
"""

from __future__ import annotations

import threading
from collections import Counter

MAX_ATTEMPTS = 10  # first try + 9 retries: ~0.5 s + 1 s + ... capped at 20 s each (botocore standard mode)
RETRY_CONFIG = {"retries": {"mode": "standard", "max_attempts": MAX_ATTEMPTS}}
_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def snapshot() -> dict[str, int]:
    """Faults seen by this process so far, by kind (an error code such as ``SlowDown``, or ``connection``)."""
    with _lock:
        return dict(_counts)


def since(before: dict[str, int]) -> dict[str, int]:
    """Faults seen by this process since ``before`` (a ``snapshot()``)."""
    now = snapshot()
    return {kind: count - before.get(kind, 0) for kind, count in sorted(now.items()) if count > before.get(kind, 0)}


def add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """The sum of two fault tallies."""
    out = Counter(total)
    out.update(more)
    return dict(sorted(out.items()))


def record(kind: str) -> None:
    with _lock:
        _counts[kind] += 1


def on_response(response_dict=None, exception=None, **_kwargs) -> None:
    """botocore ``response-received`` hook: one call per HTTP attempt, retried or not."""
    if exception is not None:
        record("connection")
        return
    status = (response_dict or {}).get("status_code", 200)
    if status in _RETRIED_STATUS:
        record(_error_code(response_dict) or f"HTTP {status}")


def _error_code(response_dict: dict) -> str:
    """The S3 error code of a failed answer (``<Code>SlowDown</Code>``), or the status header's."""
    body = response_dict.get("body") or b""
    if isinstance(body, bytes) and b"<Code>" in body:
        return body.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode("ascii", "replace")
    headers = response_dict.get("headers") or {}
    return str(headers.get("x-amz-error-code", ""))


def s3_options(storage_options: dict) -> dict:
    """``storage_options`` for an S3 URL with the retry policy and the counted session added.

    A caller's own ``session`` or ``config_kwargs["retries"]`` wins: the store then retries as told,
    uncounted unless the caller's session is this module's.
    """
    options = dict(storage_options)
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", dict(RETRY_CONFIG["retries"]))
    from pipeline.store.s3session import CountedHTTPSession, counted_session

    config.setdefault("http_session_cls", CountedHTTPSession)
    options["config_kwargs"] = config
    options.setdefault("session", counted_session(on_response))
    return options


def is_s3_url(uri: str) -> bool:
    return uri.split("://", 1)[0] in ("s3", "s3a") if "://" in uri else False


def retrying_options(uri: str, storage_options: dict | None) -> dict:
    """The options to open ``uri`` with: S3 gets retry policy and counting; anything else is unchanged."""
    options = dict(storage_options or {})
    return s3_options(options) if is_s3_url(uri) else options
