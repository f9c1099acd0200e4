"""The benchmark scripts of histolib, each run as ``python benchmarks/<name>.py``.

A package so that the tests import them by name (``from benchmarks import tiling``); see
``benchmarks/README.md`` for what each measures.
"""
