"""Views: data-described training views of an image, their sampling policy, and the one renderer.

- :mod:`eupe.views.spec`: :class:`ViewSpec` fully describes a view (crop box, flip, colour jitter,
  grayscale, blur, solarize, output size) and serializes to a fixed-width float64 row for the
  feature store (``views_to_array``, ``VIEW_FIELDS``, ``RENDERER_VERSION``); no torch.
- :mod:`eupe.views.policy`: :class:`ViewPolicy` draws views reproducibly from ``(seed, image key,
  view index)`` (``sample_views``, ``view_rng``, ``random_resized_crop_box``); no torch.
- :mod:`eupe.views.source`: ``open_image`` reads an image's header (size, orientation, pixel limit)
  and decodes lazily, at reduced size when a crop allows; ``ImageDecodeError``.
- :mod:`eupe.views.renderer`: ``render`` / ``render_views`` turn a source (or decoded pixels) plus a
  view into a model input, deterministically.
- :mod:`eupe.views.photometric`: torchvision's photometric formulas; :mod:`eupe.views.kernels`: the
  same pixel work compiled with numba (``warm_up_kernels``).

Like every package of eupe, this one imports nothing: import a name from the module that defines it
(the store's metadata code reads specs and policies without loading torch).
"""
