"""The feature store: a plain Zarr v3 group of teachers' outputs per image and per view.

Read it from the top down:

- :mod:`eupe.store.store`: ``FeatureStore`` (open, create, look up) and ``StoreParams``.
- :mod:`eupe.store.teacher_group`: one teacher's part of the store (identity, view blocks, chunk
  writes with manifests, checked reads); a package, see its map.
- :mod:`eupe.store.codecs`: the codecs that turn features into a few numeric components and back,
  one module per family and one registry; a package, see its map.
- :mod:`eupe.store.extract`: ``ExtractConfig`` and ``extract_teacher``, running a teacher over a dataset.
- :mod:`eupe.store.verify`: checking a store; :mod:`eupe.store.upgrade`: converting older formats.
- :mod:`eupe.store.stats`: per-teacher normalization statistics; :mod:`eupe.store.plan`: paper-scale
  planning from measured costs.
- :mod:`eupe.store.notebook`: the store in a notebook (``Sample``, lookup by image key);
  :mod:`eupe.store.dims`: dimension names and coordinates (xarray); :mod:`eupe.store.zarr_codecs`:
  the codecs as a zarr v3 codec, so plain ``zarr`` reads float32 features.
- :mod:`eupe.store.layout`: names, status values and the ``Store*Error`` family every part shares.
- :mod:`eupe.store.manifest`, :mod:`eupe.store.status_record`, :mod:`eupe.store.claims`,
  :mod:`eupe.store.consolidated`, :mod:`eupe.store.fastread`: chunk manifests, the status record,
  rank claims, consolidated metadata and single-chunk fast reads.

Like every package of eupe, this one imports nothing: import a name from the module that defines it
(``eupe.store.layout`` stays light, so the CLIs answer ``--help`` without torch).
"""
