"""User-facing functions: validate inputs, normalize layouts, pick a config, launch."""
