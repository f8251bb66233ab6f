"""Application package (installed as eupe.export)."""
