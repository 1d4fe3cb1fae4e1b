"""Numba kernels (installed as ``streamlmu.kernels``): plain functions over arrays."""
