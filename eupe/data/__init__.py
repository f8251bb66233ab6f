"""Dataset access for teacher-feature extraction.

- :mod:`eupe.data.shards`: indexed random access to webdataset tar shards (``ShardIndex``,
  ``ShardReader``, ``index_shards``, ``write_shards``, ``shard_fingerprint``, ``DatasetError``).

Like every package of eupe, this one imports nothing: import a name from the module that defines it.
"""
