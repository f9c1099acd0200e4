"""Grids of training runs: expand a GRID.yaml, train, resume, evaluate, keep the best."""
