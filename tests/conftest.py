import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def smooth_signal(length: int, sigma: float = 10.0, seed: int = 0) -> np.ndarray:
    """Unit-variance low-pass noise, ``(length,)`` float64."""
    u = gaussian_filter1d(np.random.default_rng(seed).standard_normal(length), sigma)
    return u / u.std()
