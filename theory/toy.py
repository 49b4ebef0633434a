"""The paper's toy data (Sec. 4, App. C): isotropic Gaussian inputs, additive Gaussian augmentation.

x~ ~ N(0, I_dim); the augmentation adds noise of standard deviation ``strength`` (in units of the data's
standard deviation, as the official toy code's ``--noise``) on the last ``augmented_dims`` coordinates.

noisy_views = 1   x = x~,        x' = x~ + eps     (paper Sec. 4: x' = x + noise)
noisy_views = 2   x = x~ + eps1, x' = x~ + eps2    (official toy code: both views augmented)
"""

from __future__ import annotations

import numpy as np

NOISY_VIEWS = (1, 2)


def augmentation_mask(dim: int, augmented_dims: int) -> np.ndarray:
    """1.0 on the augmented (last ``augmented_dims``) coordinates, 0.0 on the clean ones."""
    mask = np.zeros(dim)
    mask[dim - augmented_dims :] = 1.0
    return mask


def toy_views(
    rng: np.random.Generator,
    samples: int,
    dim: int = 16,
    augmented_dims: int = 8,
    strength: float | np.ndarray = 2.0,
    noisy_views: int = 1,
    batch_shape: tuple = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Two views (x, x_aug), each (*batch_shape, samples, dim).

    ``strength`` may be an array of shape ``batch_shape`` (one strength per configuration).
    """
    if noisy_views not in NOISY_VIEWS:
        raise ValueError(f"noisy_views must be 1 or 2, got {noisy_views!r}")
    clean = rng.standard_normal((*batch_shape, samples, dim))
    scale = np.asarray(strength, dtype=np.float64)[..., None, None]
    noise_shape = (*batch_shape, samples, augmented_dims)
    first = dim - augmented_dims
    x_aug = clean.copy()
    x_aug[..., first:] += scale * rng.standard_normal(noise_shape)
    if noisy_views == 1:
        return clean, x_aug
    clean[..., first:] += scale * rng.standard_normal(noise_shape)
    return clean, x_aug


def apriori_threshold(noisy_views: int, data_std: float = 1.0, loss: str = "paper") -> float:
    """Augmentation strength above which X at W -> 0 (all alpha = 1/N) has negative eigenvalues.

    paper loss: E X(W -> 0) = (N-1)/N (2 Cov(x) - Cov(x' - x)) (``covariance`` module doc). Along an augmented
    coordinate, with data variance v and noise std s:
      one noisy view:  2 v - s^2, negative iff s > sqrt(2) sqrt(v);
      two noisy views: 2 (v + s^2) - 2 s^2 = 2 v > 0 for every s: no a-priori threshold (inf).
    dot loss: p = 1/N at W -> 0, so X = (x^T C x' + x'^T C x) / (tau N), C the centring matrix: twice the
    cross-covariance of the views over tau, whose expectation 2 (N-1)/N Cov(clean x) / tau is PSD at every
    strength with either number of noisy views (the noise of one view is independent of the other): inf.
    """
    if noisy_views not in (1, 2):
        raise ValueError(f"noisy_views must be 1 or 2, got {noisy_views!r}")
    if loss == "dot" or noisy_views == 2:
        return float("inf")
    return float(np.sqrt(2.0) * data_std)
