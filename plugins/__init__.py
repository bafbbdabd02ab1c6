"""Plugins bundled with biqabench. Each subpackage is loaded through its own entry point,
exactly like a third-party plugin."""
