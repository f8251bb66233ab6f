"""EUPE: distil large vision foundation encoders into small, fast ones around an offline teacher-feature cache."""
__version__ = "0.1.0"
