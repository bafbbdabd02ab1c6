"""Foundation: errors, atomic I/O, YAML config, paths, plots, metrics, statistics."""
