"""Sample-quality metrics on Inception features: FID, KID, IS, and reference-statistics files; and PSNR.

The feature metrics are pure numpy/scipy, float64 throughout. The features are Inception-v3 pool3 activations
(B, 2048) and the logits its 1008-way classifier (see evaluation/inception.py); nothing
here depends on where they came from.
"""
from __future__ import annotations

import os
import zipfile

import jax.numpy as jnp
import numpy as np
import scipy.special

from training.files import atomic_savez


def image_psnr(x, x_hat, mask=None):
    """(B,) PSNR_b = 10 log10(1 / mean_{h,w,c} (x_b - x_hat_b)^2) of images in [0, 1] (a perfect one counts 100 dB;
    numpy or jax arrays, traceable). With a mask m broadcastable to the images (an inpainting region, say) the mean
    is over its pixels alone: sum m (x_b - x_hat_b)^2 / sum m (broadcast to (B, H, W, C))."""
    d2 = (jnp.asarray(x, jnp.float32) - jnp.asarray(x_hat, jnp.float32)) ** 2
    if mask is None:
        mse = jnp.mean(d2, axis=(1, 2, 3))
    else:
        m = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), d2.shape)
        mse = jnp.sum(m * d2, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(m, axis=(1, 2, 3)), 1.0)
    return jnp.where(mse > 0, -10.0 * jnp.log10(jnp.maximum(mse, 1e-10)), 100.0)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features f_1..f_N (rows), in float64.

        mu    = (1/N) sum_i f_i
        Sigma = 1/(N-1) sum_i (f_i - mu)(f_i - mu)^T

    (the unbiased covariance, as in the reference FID implementations).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(
            f'feature_statistics needs a (N, D) array with N >= 2, got shape {f.shape}.')
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd_eigenvalues(w: np.ndarray) -> np.ndarray:
    """sqrt(w) for the eigenvalues w of a symmetric PSD matrix, with the ones below the
    round-off level tol = max(w) * D * eps (negative or not) set to 0 first; otherwise
    sqrt turns a 1e-13 round-off into a 3e-7 error, once per null direction."""
    tol = max(w.max(), 0.0) * w.shape[0] * np.finfo(w.dtype).eps
    return np.sqrt(np.where(w > tol, w, 0.0))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root S^{1/2} = V diag(sqrt(w)) V^T of a symmetric PSD S = V diag(w) V^T."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * _sqrt_psd_eigenvalues(w)) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017):

        d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).

    Tr((S1 S2)^{1/2}) is computed as sum_k sqrt(lambda_k) over the eigenvalues of
    M = S1^{1/2} S2 S1^{1/2}, which has the eigenvalues of S1 S2 but is symmetric PSD,
    so eigvalsh applies and eigenvalues at round-off level (including negative ones) are
    set to 0. This stays accurate to ~1e-15 relative for singular covariances (fewer
    samples than feature dimensions), where scipy.linalg.sqrtm(S1 S2) loses digits
    and returns complex values.
    The result is clipped at 0 (a negative value can only be round-off).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            'frechet_distance needs mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D); '
            f'got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}.')
    for name, a in (('mu1', mu1), ('sigma1', s1), ('mu2', mu2), ('sigma2', s2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f'frechet_distance: {name} has non-finite entries.')
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = _sqrt_psd_eigenvalues(np.linalg.eigvalsh((m + m.T) / 2)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples (m rows each) with k(a, b) = (a.b/d + 1)^3.

        MMD_u^2 = 1/(m(m-1)) sum_{i!=j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i,j} k(x_i, y_j)
    """
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / m**2)


def kernel_inception_distance(
    feats1, feats2, num_subsets: int = 100, subset_size: int = 1000,
    rng: np.random.Generator | int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased estimator of

        MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y),   k(a, b) = (a.b / d + 1)^3,

    (see _polynomial_mmd2_unbiased) on `num_subsets` random subsets of m =
    min(subset_size, N1, N2) rows drawn without replacement from each feature set.

    Returns (mean, std) over the subsets. std is the spread of a single size-m estimate
    (its standard error; the "±" reported by Binkowski et al. and the standard
    implementations); it is not divided by sqrt(num_subsets), because subsets drawn from
    one finite sample overlap and are not independent.
    """
    x = np.asarray(feats1, dtype=np.float64)
    y = np.asarray(feats2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            'kernel_inception_distance needs (N1, D) and (N2, D) features, '
            f'got {x.shape} and {y.shape}.')
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(
            'kernel_inception_distance needs at least 2 samples per set, '
            f'got a subset size of {m}.')
    if num_subsets < 1:
        raise ValueError(f'num_subsets must be >= 1, got {num_subsets}.')
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    mmds = np.array([
        _polynomial_mmd2_unbiased(x[gen.choice(x.shape[0], m, replace=False)],
                                  y[gen.choice(y.shape[0], m, replace=False)])
        for _ in range(num_subsets)])
    return float(mmds.mean()), float(mmds.std())


def inception_score(logits, num_splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) from classifier logits, per split:

        IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y|x) = softmax(logits(x)),  p(y) = E_x p(y|x),

    with both expectations over the split. Returns (mean, std) of IS over `num_splits`
    near-equal splits (np.array_split; no sample dropped). To reproduce the original
    TF numbers pass the Inception 'logits_unbiased' (the 1008-way fc without its bias).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < num_splits or num_splits < 1:
        raise ValueError(
            f'inception_score needs (N, K) logits with N >= num_splits >= 1, got shape {z.shape} '
            f'and num_splits={num_splits}.')
    log_p = scipy.special.log_softmax(z, axis=1)
    scores = []
    for part in np.array_split(log_p, num_splits):
        log_py = scipy.special.logsumexp(part, axis=0) - np.log(part.shape[0])
        kl = np.sum(np.exp(part) * (part - log_py), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def save_reference_stats(path, mu, sigma, features=None, **extra) -> None:
    """Writes mu (D,), sigma (D, D), optionally features (N, D) (for KID) and any `extra` arrays
    (e.g. logits, labels, the feature network's fingerprint) to an .npz.

    The keys 'mu' and 'sigma' are those of the reference-statistics files of the TTUR and
    pytorch-fid implementations, so their published files load here too. The file is
    written to a temporary name and renamed, so a crash never leaves a partial file.
    """
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    _check_stats_shapes(path, mu, sigma, features)
    arrays = {'mu': mu, 'sigma': sigma, **{k: np.asarray(v) for k, v in extra.items()}}
    if features is not None:
        arrays['features'] = np.asarray(features)
    atomic_savez(path, **arrays)


def load_reference_stats(path) -> dict[str, np.ndarray]:
    """Reads {'mu', 'sigma'[, 'features', extra arrays]} written by save_reference_stats (or TTUR/pytorch-fid)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'Reference statistics not found at {path}: compute them from the reference images\' '
            'Inception pool3 features with feature_statistics and save_reference_stats, or point '
            'the config at an existing .npz.')
    try:
        with np.load(path, allow_pickle=False) as data:
            stats = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f'{path} is not a readable .npz of reference statistics (corrupt or truncated: {e}); '
            'delete it and compute it again.') from e
    if 'mu' not in stats or 'sigma' not in stats:
        raise ValueError(
            f'{path} holds the arrays {sorted(stats)}, but reference statistics need \'mu\' and \'sigma\'.')
    _check_stats_shapes(path, stats['mu'], stats['sigma'], stats.get('features'))
    return stats


def _check_stats_shapes(path, mu, sigma, features) -> None:
    d = mu.shape[0] if mu.ndim == 1 else -1
    bad = mu.ndim != 1 or sigma.shape != (d, d)
    if features is not None:
        bad = bad or np.ndim(features) != 2 or np.shape(features)[1] != d
    if bad:
        raise ValueError(
            f'Reference statistics for {path} have inconsistent shapes: mu {mu.shape}, sigma '
            f'{sigma.shape}, features {None if features is None else np.shape(features)}; '
            'expected (D,), (D, D) and (N, D).')
