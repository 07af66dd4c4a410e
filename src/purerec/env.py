"""``purerec.env``, as before the sub-packages: the same module object as ``purerec.sim.env``
(kept so that ``from purerec import env`` and ``import purerec.env`` in users' code still work)."""

import sys

from purerec.sim import env as _env

sys.modules[__name__] = _env
