"""The evaluation protocol's fixed values, importable without torch (``eupe-eval --help`` shows them).

kNN: the DINO / EUPE weighted vote with temperature ``TEMPERATURE`` over the ``DEFAULT_KS``
nearest neighbours; ``FASHION_MNIST`` is the name that selects Debian's Fashion-MNIST.
"""

TEMPERATURE = 0.07
DEFAULT_KS = (10, 20)
FASHION_MNIST = "fashion-mnist"
