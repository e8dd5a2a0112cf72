"""The pipeline's stages as plain functions over the store and the clients.

No Dagster import: the assets in `defs/` are thin wrappers that call these, so the logic
is testable on its own and the benchmark's baseline can be compared against it fairly.
"""
