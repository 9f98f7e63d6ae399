"""The aiobotocore pieces behind ``pipeline.store.retries`` (imported only when a store is on S3).

The attempt hook is passed in (``counted_session(hook)``) rather than imported, so this module
depends on aiobotocore alone and ``retries`` is the only side that knows both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession

_HOOK_ID = "actionreel-storage-fault-counter"
_lock = threading.Lock()
_session: CountedSession | None = None


class CountedSession(AioSession):
    """An ``AioSession`` whose clients report every S3 attempt to the fault counter.

    It pickles as "this process's counted session": fsspec pickles a filesystem together with its
    options (Ray ships them to workers), and a live session holds locks and clients.
    """

    hook: Callable[..., None]

    def __reduce__(self):
        return counted_session, (self.hook,)


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


def counted_session(hook: Callable[..., None]) -> CountedSession:
    """This process's session, calling ``hook`` on every S3 attempt (botocore ``response-received``).

    One per process, so fsspec's instance cache reuses one filesystem; ``hook`` is a module-level
    function, so the session pickles by reference to it.
    """
    global _session
    with _lock:
        if _session is None:
            _session = CountedSession()
            _session.hook = hook
            _session.register("response-received.s3", hook, unique_id=_HOOK_ID)
        return _session
