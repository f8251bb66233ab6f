"""The evaluation protocol's fixed values, importable without torch (``eupe-eval --help`` shows them).

kNN (DINOv2/DINOv3/EUPE ``knn.py``): the temperature-weighted vote with ``TEMPERATURE`` over each
of ``DEFAULT_KS`` nearest neighbours; the table quotes ``HEADLINE_K`` (the DINO convention; which k
the paper quotes is not stated). ``TRANSFORMS``: ``eupe`` = resize the short side to 256 then
centre-crop 224 (scaled to the model's resolution: the crop keeps ``CROP_RATIO`` of the short
side), ``full`` = the whole image squashed to the model's resolution (the earlier behaviour).
``FASHION_MNIST`` is the name that selects Debian's Fashion-MNIST.
"""

TEMPERATURE = 0.07
DEFAULT_KS = (10, 20, 100, 200)
HEADLINE_K = 20
RESIZE_SIZE = 256
CROP_SIZE = 224
CROP_RATIO = CROP_SIZE / RESIZE_SIZE
TRANSFORMS = ("eupe", "full")
DEFAULT_TRANSFORM = "eupe"
FASHION_MNIST = "fashion-mnist"
