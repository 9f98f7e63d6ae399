"""The aiobotocore pieces behind ``pipeline.store.retries`` (imported only when a store is on S3)."""

from __future__ import annotations

import threading

from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession

from pipeline.store.retries import on_response

_HOOK_ID = "actionreel-storage-fault-counter"
_lock = threading.Lock()
_session: CountedSession | None = None


class CountedSession(AioSession):
    """An ``AioSession`` whose clients report every S3 attempt to the fault counter.

    It pickles as "this process's counted session": fsspec pickles a filesystem together with its
    options (Ray ships them to workers), and a live session holds locks and clients.
    """

    def __reduce__(self):
        return counted_session, ()


class CountedHTTPSession(AIOHTTPSession):
    """aiohttp sessions that leave every dropped connection to botocore's retry policy.

    aiohttp resends an idempotent request at once, without backoff or trace, when a kept-alive
    connection drops; botocore then never sees the fault. With that resend off the reset is retried
    by botocore (backoff with jitter) and counted like a throttled answer.
    """

    async def _get_session(self, proxy_url):
        session = await super()._get_session(proxy_url)
        session._retry_connection = False
        return session


def counted_session() -> CountedSession:
    """This process's session (one per process, so fsspec's instance cache reuses one filesystem)."""
    global _session
    with _lock:
        if _session is None:
            _session = CountedSession()
            _session.register("response-received.s3", on_response, unique_id=_HOOK_ID)
        return _session
