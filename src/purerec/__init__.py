"""purerec: a pure-functional JAX simulator of interactive recommendation, and DSRM-HRL."""

__version__ = "0.1.0"
