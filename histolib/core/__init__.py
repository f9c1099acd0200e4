"""Shared plumbing of every pipeline stage: atomic writes, progress bars, process pools,
GeoParquet tables with histolib metadata, JSON-safe values. Nothing here knows about slides."""
