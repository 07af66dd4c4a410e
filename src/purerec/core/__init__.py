"""The layer every other one stands on: error types, atomic writes, signals, run locks, host
devices, the compilation cache and the memory estimate. Imports nothing else of purerec."""
