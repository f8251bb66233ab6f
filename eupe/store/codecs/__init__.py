"""Codecs that turn cached teacher features into a few plain numeric components and back.

Every codec maps float32 token vectors ``x[..., T, D]`` (leading axes e.g. ``[N, K]`` images x
views; ``T`` tokens of width ``D``; a summary vector is the case ``T = 1``) to a dict of named
numpy arrays, its *components*, and back with one documented formula.  Every component has the
same leading axes as ``x`` followed by a fixed per-view suffix (:meth:`Codec.components`), so a
store pre-creates ``[N, K, *suffix]`` arrays, and :meth:`Codec.decode` works on any leading
index/slice of the components (one view, one image, a batch).  No pickles, no hidden state:
the decoded value depends only on the components and the codec's parameters (``to_dict``).
:meth:`Codec.decode` is the single decode call shared by the cache ``verify`` and the trainer.
Every component's suffix starts with the token axis (or is a per-view row ``(1, D)``), so one summary vector per view can be
stored without its ``T = 1`` axis: :meth:`Codec.encode_vector` / :meth:`Codec.decode_vector` /
:meth:`Codec.vector_components` do exactly that (re-inserting the axis with ``p[..., None, :]``
would be wrong for 1-D components such as ``scale [T]``).

Every formula is written once over a tiny array backend and runs on numpy (:meth:`Codec.encode`,
:meth:`Codec.decode`) or on torch tensors on any device (:meth:`Codec.encode_torch`,
:meth:`Codec.decode_torch`: quantise on the teacher's GPU, decode on the trainer's).  Decoding is
elementwise float32 arithmetic in a fixed order, so numpy and torch decode bit for bit alike;
encoding agrees except where a float32 reduction order moves a value across a rounding edge.
Importing this package does not import torch.

Modules (each family's docstring holds its formulas)
----------------------------------------------------

``ops``
    The array backends :data:`~eupe.store.codecs.ops.NUMPY` and
    :data:`~eupe.store.codecs.ops.TORCH` (torch imported on first use) and the ``Array`` alias.
``base``
    :class:`Codec`, the base class: numpy/torch/vector entry points, input checks, strict
    ``to_dict`` (read back by ``registry.codec_from_dict``); ``FORMAT_VERSION``, ``FP16_MAX``, ``ComponentSpec``.
``fp16``
    ``fp16``: :class:`Float16Codec`, ``x = values`` in float16.
``tokenint``
    ``int8``, ``int6``, ``int4``: :class:`TokenIntCodec`, per-token absmax integers.
``haar``
    ``compact``, ``tiny``: :class:`HaarCodec`, channel- and token-normalised, spatially
    Haar-transformed quantisation; the transform (:func:`grid_shape`, :func:`haar_matrix`,
    :func:`haar_forward`, :func:`haar_inverse`) and ``MEAN_WEIGHT``.
``registry``
    :data:`CODECS`, the one registry, and its documented order; :func:`get_codec`,
    :func:`codec_names`, :func:`codec_from_dict`; ``MEASURED``, the figures ``eupe-cache extract --help`` quotes.
``storage``
    :func:`zarr_compressors` (the zarr 3 chain after the ``eupe.features`` codec of
    :mod:`eupe.store.zarr_codecs`) and :func:`stored_nbytes`.
``metrics``
    :func:`token_cosine`, :func:`smooth_l1` and :func:`fidelity` (raw and normalised space).

Like every package of eupe, this one imports nothing: import a name from the module that defines it
(``from eupe.store.codecs.registry import get_codec``).
"""
