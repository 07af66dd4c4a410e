"""Real-data loaders: build the (train, test) ``World`` pair from KuaiRec / KuaiRand-Pure files or
from the user's own CSV logs.

``load_kuairec``, ``load_kuairand`` and ``load_user_csv`` (the ``csv`` source, schema in
``purerec.data.loaders.user_csv``; imported lazily by ``purerec.data.datasets``); shared
semantics in ``purerec.data.loaders.common``, strict CSV reading and ``DataFormatError`` in
``purerec.data.loaders.csvio``.
"""

from purerec.data.loaders.csvio import DataFormatError, MissingFileError
from purerec.data.loaders.kuairand import load_kuairand
from purerec.data.loaders.kuairec import load_kuairec
from purerec.data.loaders.user_csv import load_user_csv

__all__ = ["DataFormatError", "MissingFileError", "load_kuairec", "load_kuairand", "load_user_csv"]
