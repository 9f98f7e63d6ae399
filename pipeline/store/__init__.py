"""The store and version family: content-addressed objects, the episode store, catalogs, versions, refs,
history, derived versions, garbage collection, verification and the per-episode stats cache.

Modules are imported by their full name (``pipeline.store.episodes``, ``pipeline.store.versions``, ...);
this package re-exports nothing, so importing one module never drags in the video stack.
"""
