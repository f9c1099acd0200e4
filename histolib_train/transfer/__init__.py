"""``histolib transfer``: restain a whole slide (or a folder of tiles) with a generator."""
