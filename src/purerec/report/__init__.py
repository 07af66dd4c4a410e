"""The report layer: paper-style tables and figures read from run records, TensorBoard files."""
