"""The simulator: the static world, the env (``reset`` / ``step`` with auto-reset), feedback,
abandonment, preference dynamics, slates, metrics, reference policies, the one rollout and the
logged data. Imports nothing of ``state``, ``agents``, ``report`` or ``run``."""
