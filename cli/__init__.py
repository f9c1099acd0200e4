"""The ``histolib`` command line (Typer), installed as the ``histolib_cli`` package.

Each command lives in its own module with a ``register(app)`` function; modules import only
Typer at load time and import the heavy libraries inside the command bodies, so that
``histolib --help`` starts fast.
"""
