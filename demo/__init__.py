"""Application package (installed as eupe.demo): the end-to-end demo behind `make demo`."""
