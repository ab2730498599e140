"""NumPy backend: the float64 reference."""
