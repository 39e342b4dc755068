"""models/attention.py against closed forms: naive softmax(Q K^T / sqrt(d)) V, masking, identity at init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import Attention, BasicTransformerBlock, Transformer2DModel


def _naive_attention(p, x, c, heads, mask=None):
    """sum over heads of softmax(Q_h K_h^T / sqrt(d)) V_h, written out with numpy."""
    x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
    q, k, v = (a @ np.asarray(p[n]["kernel"], np.float64) for a, n in ((x, "to_q"), (c, "to_k"), (c, "to_v")))
    B, Lq, inner = q.shape
    d = inner // heads
    out = np.zeros_like(q)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        logits = q[..., s] @ np.swapaxes(k[..., s], 1, 2) / np.sqrt(d)
        if mask is not None:
            logits = np.where(mask[:, None, :], logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        out[..., s] = (w / w.sum(-1, keepdims=True)) @ v[..., s]
    return out @ np.asarray(p["to_out_0"]["kernel"], np.float64) + np.asarray(p["to_out_0"]["bias"])


@pytest.mark.parametrize("cross", [False, True])
def test_attention_matches_naive_softmax(cross):
    kx, kc, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, 5, 12))
    c = jax.random.normal(kc, (2, 7, 6)) if cross else None
    attn = Attention(heads=3, dim_head=4)
    params = attn.init(kp, x, c)["params"]
    ours = attn.apply({"params": params}, x, c)
    ref = _naive_attention(params, x, x if c is None else c, heads=3)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)


def test_masked_keys_are_excluded():
    kx, kc, kp, kn = jax.random.split(jax.random.PRNGKey(1), 4)
    x, c = jax.random.normal(kx, (2, 4, 8)), jax.random.normal(kc, (2, 6, 8))
    mask = jnp.array([[True] * 3 + [False] * 3, [True] * 5 + [False]])
    attn = Attention(heads=2, dim_head=4)
    params = attn.init(kp, x, c)["params"]
    ours = attn.apply({"params": params}, x, c, mask)
    np.testing.assert_allclose(np.asarray(ours), _naive_attention(params, x, c, 2, np.asarray(mask)),
                               rtol=1e-5, atol=1e-5)
    # changing the masked keys changes nothing
    c2 = jnp.where(mask[..., None], c, 100.0 * jax.random.normal(kn, c.shape))
    np.testing.assert_array_equal(np.asarray(attn.apply({"params": params}, x, c2, mask)), np.asarray(ours))


def test_cross_attention_without_context_attends_to_own_input():
    kx, kp = jax.random.split(jax.random.PRNGKey(2))
    x = jax.random.normal(kx, (1, 6, 8))
    block = BasicTransformerBlock(heads=2, dim_head=4)
    params = block.init(kp, x)["params"]
    ln = lambda h, p: (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5) * p["scale"] + p["bias"]
    h = x + Attention(2, 4).apply({"params": params["attn1"]}, ln(x, params["norm1"]))
    n2 = ln(h, params["norm2"])
    expect_attn2 = Attention(2, 4).apply({"params": params["attn2"]}, n2, n2)
    got = block.apply({"params": params}, x, capture_intermediates=lambda m, _: m.name == "attn2")
    np.testing.assert_allclose(np.asarray(got[1]["intermediates"]["attn2"]["__call__"][0]),
                               np.asarray(expect_attn2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("linear", [False, True])
def test_fresh_spatial_transformer_is_identity(linear):
    kx, kc, kp = jax.random.split(jax.random.PRNGKey(3), 3)
    x, c = jax.random.normal(kx, (2, 4, 4, 16)), jax.random.normal(kc, (2, 3, 8))
    block = Transformer2DModel(heads=2, dim_head=8, depth=2, norm_groups=4, use_linear_projection=linear)
    params = block.init(kp, x, c)["params"]
    assert not np.any(np.asarray(params["proj_out"]["kernel"]))
    np.testing.assert_array_equal(np.asarray(block.apply({"params": params}, x, c)), np.asarray(x))
    # the zero layer is the only reason: a nonzero proj_out changes the output
    params["proj_out"]["kernel"] = jnp.ones_like(params["proj_out"]["kernel"])
    assert not np.allclose(np.asarray(block.apply({"params": params}, x, c)), np.asarray(x))
