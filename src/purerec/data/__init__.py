"""Building worlds on the host (NumPy): the calibrated synthetic worlds, the real-data loaders,
matrix factorisation, the worlds cache, the calibration card and the validation split."""
