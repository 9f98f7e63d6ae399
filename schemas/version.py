"""The version of the episode schema. Bump on any change to the Arrow schemas or their meaning.

1.1: cameras gain ``channel_order`` (additive: 1.0 catalogs read with "rgb", what they always meant).
"""

SCHEMA_VERSION = "1.1"
SCHEMA_METADATA_KEY = b"actionreel.schema_version"
