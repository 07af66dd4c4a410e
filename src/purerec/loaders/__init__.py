"""Real-data loaders: build the (train, test) ``World`` pair from KuaiRec / KuaiRand-Pure files or
from the user's own CSV logs.

``load_kuairec``, ``load_kuairand`` and ``load_user_csv`` (the ``csv`` source, schema in
``purerec.loaders.user_csv``; imported lazily by ``purerec.datasets``); shared
semantics in ``purerec.loaders.common``, strict CSV reading and ``DataFormatError`` in
``purerec.loaders.csvio``.
"""

from purerec.loaders.csvio import DataFormatError, MissingFileError
from purerec.loaders.kuairand import load_kuairand
from purerec.loaders.kuairec import load_kuairec
from purerec.loaders.user_csv import load_user_csv

__all__ = ["DataFormatError", "MissingFileError", "load_kuairec", "load_kuairand", "load_user_csv"]
