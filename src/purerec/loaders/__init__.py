"""Real-data loaders: build the (train, test) ``World`` pair from KuaiRec / KuaiRand-Pure files.

``load_kuairec`` and ``load_kuairand`` (imported lazily by ``purerec.datasets``); shared
semantics in ``purerec.loaders.common``, strict CSV reading and ``DataFormatError`` in
``purerec.loaders.csvio``.
"""

from purerec.loaders.csvio import DataFormatError, MissingFileError
from purerec.loaders.kuairand import load_kuairand
from purerec.loaders.kuairec import load_kuairec

__all__ = ["DataFormatError", "MissingFileError", "load_kuairec", "load_kuairand"]
