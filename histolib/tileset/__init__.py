"""Tiles on disk: the tile manifest, and the one layer that reads tiles and their masks
(from a manifest or a folder of images) for every stage that consumes them."""
