"""Application package (installed as eupe.evaluation)."""
