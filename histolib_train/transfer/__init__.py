"""``histolib transfer``: restain a whole slide (or a folder of tiles) with a generator.

:func:`restain` is the entry point (a slide, a folder of tiles, or slides on a Dask cluster),
:class:`TransferOptions` its options;
:mod:`.slide`, :mod:`.images` and :mod:`.cluster` are its stages.
"""

from histolib_train.transfer.options import TransferOptions
from histolib_train.transfer.restaining import Restained, restain

__all__ = ["Restained", "TransferOptions", "restain"]
