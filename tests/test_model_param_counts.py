"""Parameter counts of the published configs equal the reference implementations'.

Counted with jax.eval_shape (no compilation, ~1 s per config). The count is every
model variable, as torch's sum(p.numel() for p in model.parameters()) counts every
nn.Parameter, including NCSN++'s frozen Fourier frequencies (our 'constants').
"""
import importlib
import math

import jax
import pytest

import models

# score_sde_pytorch's counts for the same configs; NCSNv2's is ermongroup/ncsnv2's
# CIFAR-10 RefineNet (ngf=128), which has no frozen parameters.
EXPECTED = {
    "vp/ddpmpp_cifar10_continuous": 61_804_419,
    "vp/ddpmpp_deep_cifar10_continuous": 106_632_579,
    "ve/ncsnpp_cifar10_continuous": 62_758_915,
    "ve/ncsnpp_deep_cifar10_continuous": 107_587_075,
    "vp/ncsnpp_cifar10_continuous": 62_693_251,
    "subvp/ddpmpp_cifar10_continuous": 61_804_419,
    "vp/ddpm_cifar10": 35_218_947,
    "vp/ddpm_celebahq": 111_569_923,
    "ve/ncsnpp_celebahq_256_continuous": 65_574_549,
    "ve/ncsnv2_cifar10": 29_694_083,
}


def load_config(name):
    return importlib.import_module("configs." + name.replace("/", ".")).get_config()


def count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_matches_reference(name):
    config = load_config(name)
    variables = jax.eval_shape(lambda rng: models.init_model(rng, config), jax.random.PRNGKey(0))
    assert count(variables) == EXPECTED[name]
    # Only the Fourier frequencies W (nf of them) are not trained.
    fourier = config.model.name == "ncsnpp" and config.model.embedding_type == "fourier"
    assert count({k: v for k, v in variables.items() if k != "params"}) == (config.model.nf if fourier else 0)
