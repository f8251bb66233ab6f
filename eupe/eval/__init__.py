"""eupe.eval (see modules)."""
