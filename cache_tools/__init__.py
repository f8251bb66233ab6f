"""Application package (installed as eupe.cache_tools)."""
