"""Dataset access for teacher-feature extraction: indexed random access to webdataset shards."""

from eupe.data.shards import (
    IMAGE_EXTENSIONS,
    DatasetError,
    ShardFailure,
    ShardIndex,
    ShardReader,
    expand_shards,
    index_shards,
    read_member,
    shard_fingerprint,
    write_shards,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "ShardFailure",
    "ShardIndex",
    "ShardReader",
    "expand_shards",
    "index_shards",
    "read_member",
    "shard_fingerprint",
    "write_shards",
]
