"""FID / KID / IS and reference-statistics files against closed forms and independent references."""
import os
import warnings

import numpy as np
import pytest
import scipy.linalg

from evaluation import metrics


def _gaussian_features(rng, n, d, shift=0.0, scale=1.0):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return scale * rng.normal(size=(n, d)) @ mix + shift


def _sqrtm_reference(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general matrix square root of S1 S2."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # sqrtm warns on singular input
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(covmean).real)


def _nuclear_norm_reference(x, y):
    """Exact for sample statistics: with S1 = A^T A, S2 = B^T B (A, B the centred features over
    sqrt(N-1)), the nonzero eigenvalues of S1 S2 are the squared singular values of A B^T, so
    Tr((S1 S2)^{1/2}) = ||A B^T||_* -- no square root of a singular matrix is ever taken."""
    a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    mu_diff = x.mean(0) - y.mean(0)
    return float(mu_diff @ mu_diff + np.sum(a * a) + np.sum(b * b)
                 - 2 * np.linalg.svd(a @ b.T, compute_uv=False).sum())


def test_feature_statistics_matches_definition():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    mu, sigma = metrics.feature_statistics(x)
    xd = x.astype(np.float64)
    centred = xd - xd.sum(0) / 50
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, xd.sum(0) / 50, rtol=1e-12)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)
    with pytest.raises(ValueError, match='N >= 2'):
        metrics.feature_statistics(x[:1])


def test_frechet_distance_matches_sqrtm_on_full_rank_gaussians():
    rng = np.random.default_rng(1)
    x = _gaussian_features(rng, 400, 16)
    y = _gaussian_features(rng, 300, 16, shift=0.3, scale=1.5)
    stats = metrics.feature_statistics(x) + metrics.feature_statistics(y)
    value = metrics.frechet_distance(*stats)
    assert value > 1.0
    np.testing.assert_allclose(value, _sqrtm_reference(*stats), rtol=1e-10)
    np.testing.assert_allclose(value, _nuclear_norm_reference(x, y), rtol=1e-10)


@pytest.mark.parametrize('n1,n2,d', [(20, 30, 64), (40, 40, 64), (10, 12, 256)])
def test_frechet_distance_rank_deficient(n1, n2, d):
    """Fewer samples than dimensions: both covariances are singular."""
    rng = np.random.default_rng(d + n1)
    x = _gaussian_features(rng, n1, d)
    y = _gaussian_features(rng, n2, d, shift=0.1, scale=0.8)
    stats = metrics.feature_statistics(x) + metrics.feature_statistics(y)
    assert np.linalg.matrix_rank(stats[1]) < d
    value = metrics.frechet_distance(*stats)
    np.testing.assert_allclose(value, _nuclear_norm_reference(x, y), rtol=1e-12)
    # sqrtm of the singular product is less accurate, but the same quantity.
    np.testing.assert_allclose(value, _sqrtm_reference(*stats), rtol=1e-6)


@pytest.mark.parametrize('n,d', [(500, 16), (30, 128)])
def test_frechet_distance_zero_for_identical_statistics(n, d):
    mu, sigma = metrics.feature_statistics(_gaussian_features(np.random.default_rng(n), n, d))
    assert metrics.frechet_distance(mu, sigma, mu, sigma) <= 1e-6 * np.trace(sigma)


def test_frechet_distance_symmetric_and_closed_forms():
    rng = np.random.default_rng(3)
    x, y = _gaussian_features(rng, 200, 8), _gaussian_features(rng, 20, 8, shift=1.0)
    s_x, s_y = metrics.feature_statistics(x), metrics.feature_statistics(y)
    np.testing.assert_allclose(metrics.frechet_distance(*s_x, *s_y),
                               metrics.frechet_distance(*s_y, *s_x), rtol=1e-12)
    d = 5
    # N(0, a^2 I) vs N(m, b^2 I): |m|^2 + d (a - b)^2.
    m = np.arange(d, dtype=float)
    value = metrics.frechet_distance(np.zeros(d), 4.0 * np.eye(d), m, 0.25 * np.eye(d))
    np.testing.assert_allclose(value, m @ m + d * (2.0 - 0.5) ** 2, rtol=1e-12)


def test_frechet_distance_rejects_bad_shapes_and_nans():
    with pytest.raises(ValueError, match='shape'):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match='sigma2 has non-finite'):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.nan))


def _mmd2_brute_force(x, y):
    k = lambda a, b: (a @ b / len(a) + 1.0) ** 3
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_equals_brute_force_formula():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.5
    # A single subset of all rows is a permutation, and MMD_u^2 is permutation invariant.
    mean, std = metrics.kernel_inception_distance(x, y, num_subsets=1, subset_size=100)
    np.testing.assert_allclose(mean, _mmd2_brute_force(x, y), rtol=1e-12)
    assert std == 0.0


def test_kid_is_unbiased_under_the_null():
    """E[MMD_u^2] = 0 when both samples come from one distribution; the biased V-statistic
    (diagonal terms kept) would sit many standard errors above 0 in this same setup."""
    rng = np.random.default_rng(5)
    reps, m, d = 300, 20, 6
    unbiased, biased = [], []
    for _ in range(reps):
        x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d))
        unbiased.append(metrics.kernel_inception_distance(x, y, num_subsets=1, subset_size=m)[0])
        k = lambda a, b: (a @ b.T / d + 1.0) ** 3
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    se = np.std(unbiased) / np.sqrt(reps)
    assert abs(np.mean(unbiased)) < 3 * se
    assert np.mean(biased) > 20 * se


def test_kid_same_vs_shifted_distribution():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    mean, std = metrics.kernel_inception_distance(x, y, num_subsets=50, subset_size=100, rng=0)
    assert std > 0 and abs(mean) < std
    shifted, shifted_std = metrics.kernel_inception_distance(
        x, y + 0.5, num_subsets=50, subset_size=100, rng=0)
    assert shifted > 5 * shifted_std and shifted > 100 * abs(mean)


def test_kid_subset_size_clipped_and_rng_reproducible():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(25, 4)) + 0.2
    a = metrics.kernel_inception_distance(x, y, num_subsets=5, subset_size=1000, rng=3)
    b = metrics.kernel_inception_distance(x, y, num_subsets=5, subset_size=25, rng=3)
    assert a == b
    with pytest.raises(ValueError, match=r'\(30, 4\) and \(25, 3\)'):
        metrics.kernel_inception_distance(x, y[:, :3])


def test_inception_score_closed_forms():
    k, n = 10, 100
    # Uniform predictions: p(y|x) = p(y), KL = 0, IS = 1.
    assert metrics.inception_score(np.zeros((n, k))) == pytest.approx((1.0, 0.0), abs=1e-12)
    # Confident one-hot predictions, each split covering the K classes once: IS = K.
    onehot = 50.0 * np.eye(k)[np.arange(n) % k]
    mean, std = metrics.inception_score(onehot, num_splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # Each prediction uniform over 2 of K balanced classes: KL = log(K/2), IS = K/2.
    two_hot = np.eye(k)[np.arange(n) % k] + np.eye(k)[(np.arange(n) + 1) % k]
    pairs = np.where(two_hot > 0, 0.0, -60.0)
    assert metrics.inception_score(pairs, num_splits=10)[0] == pytest.approx(k / 2, rel=1e-9)
    # One uniform split (IS 1) and one one-hot split (IS K): mean (1 + K)/2, std (K - 1)/2.
    halves = np.concatenate([np.zeros((n, k)), onehot])
    assert metrics.inception_score(halves, num_splits=2) == pytest.approx(
        ((1 + k) / 2, (k - 1) / 2), rel=1e-9)


def test_inception_score_matches_direct_formula():
    logits = np.random.default_rng(8).normal(size=(40, 7)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p.mean(0)
    direct = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1)))
    assert metrics.inception_score(logits, num_splits=1)[0] == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match='num_splits'):
        metrics.inception_score(logits[:5], num_splits=10)


def test_reference_stats_round_trip(tmp_path):
    rng = np.random.default_rng(9)
    feats = rng.normal(size=(20, 5)).astype(np.float32)
    mu, sigma = metrics.feature_statistics(feats)
    path = tmp_path / 'ref_stats.bin'  # the name is kept exactly (np.savez would append .npz)
    metrics.save_reference_stats(path, mu, sigma, features=feats)
    assert os.listdir(tmp_path) == ['ref_stats.bin']
    loaded = metrics.load_reference_stats(path)
    np.testing.assert_array_equal(loaded['mu'], mu)
    np.testing.assert_array_equal(loaded['sigma'], sigma)
    np.testing.assert_array_equal(loaded['features'], feats)
    metrics.save_reference_stats(path, mu, sigma)
    assert set(metrics.load_reference_stats(path)) == {'mu', 'sigma'}
    metrics.save_reference_stats(path, mu, sigma, feats, labels=np.arange(20), fingerprint=np.asarray('abc'))
    loaded = metrics.load_reference_stats(path)
    np.testing.assert_array_equal(loaded['labels'], np.arange(20))
    assert str(loaded['fingerprint']) == 'abc'
    assert os.listdir(tmp_path) == ['ref_stats.bin']


def test_reference_stats_reads_ttur_style_file(tmp_path):
    path = tmp_path / 'fid_stats_cifar10_train.npz'
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3))
    stats = metrics.load_reference_stats(path)
    np.testing.assert_array_equal(stats['sigma'], np.eye(3))


def test_reference_stats_errors_name_the_file(tmp_path):
    missing = tmp_path / 'nope.npz'
    with pytest.raises(FileNotFoundError, match='nope.npz'):
        metrics.load_reference_stats(missing)
    good = tmp_path / 'good.npz'
    metrics.save_reference_stats(good, np.zeros(64), np.eye(64))
    truncated = tmp_path / 'truncated.npz'
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / 'garbage.npz'
    garbage.write_bytes(b'not an npz at all' * 10)
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=f'{bad.name} is not a readable .npz'):
            metrics.load_reference_stats(bad)
    wrong_keys = tmp_path / 'wrong.npz'
    np.savez(wrong_keys, mean=np.zeros(3))
    with pytest.raises(ValueError, match=r"wrong.npz holds the arrays \['mean'\]"):
        metrics.load_reference_stats(wrong_keys)
    with pytest.raises(ValueError, match='inconsistent shapes'):
        metrics.save_reference_stats(tmp_path / 'x.npz', np.zeros(3), np.eye(4))
