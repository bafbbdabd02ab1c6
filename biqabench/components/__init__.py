"""Components: the plugin hooks and registry, and the interfaces plugins implement."""
