"""The machinery: store, versions, stats, video, shards, loaders, samples. Imports schemas only."""
