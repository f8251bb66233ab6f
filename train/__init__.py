"""Application package (installed as eupe.train)."""
