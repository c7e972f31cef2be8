"""Built-in node packs, one sub-package per field; each exposes ``register(registry)``."""
