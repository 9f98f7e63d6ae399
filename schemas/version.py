"""The version of the episode schema. Bump on any change to the Arrow schemas or their meaning."""

SCHEMA_VERSION = "1.0"
SCHEMA_METADATA_KEY = b"actionreel.schema_version"
