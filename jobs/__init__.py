"""Ray job entry points (ingest, shard, demo) and the CLI. Thin: parse config, wire stages, report."""
