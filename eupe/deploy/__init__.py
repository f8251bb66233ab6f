"""eupe.deploy (see modules)."""
