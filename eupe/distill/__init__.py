"""eupe.distill (see modules)."""
