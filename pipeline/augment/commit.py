"""Commit an augmentation run: a child version holding the source's episodes plus the synthetic ones.

The new version's parent is the output ref's head at commit time (the source version when the ref
does not exist yet). A compare-and-swap on the ref guards the commit; when another writer moved the
ref meanwhile, the synthetic episodes are classified again against the new head and the commit is
retried (``commit_with_retry``), so nothing another writer added is lost.
"""

from __future__ import annotations

from pipeline.store.derive import Changes, append_manifest, classify, live_content_keys
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import VersionManifest, commit_with_retry, read_manifest
from schemas import EpisodeMeta


def commit_augmented(store: EpisodeStore, ref: str, source_id: str, synthetic: list[EpisodeMeta], producer: dict,
                     attempts: int = 5) -> tuple[str, Changes, str]:
    """Returns (the ref's new head, what the commit added, the version it was built on)."""
    seen: dict = {}

    def build(head: str | None) -> VersionManifest:
        base_id = head or source_id
        base = read_manifest(store, base_id)
        changes = classify(live_content_keys(store, base, [m.episode_id for m in synthetic]), set(base.deleted),
                           synthetic)
        seen["changes"], seen["base"] = changes, base_id
        return append_manifest(store, base_id, base, changes, producer)

    version = commit_with_retry(store, ref, build, attempts, "augment")
    return version, seen["changes"], seen["base"]
