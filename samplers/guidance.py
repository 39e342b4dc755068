"""Guidance as score_fn composition: each function returns a plain score_fn(x, t), so it works with every
sampler in samplers/ unchanged.

Classifier-free guidance (Ho & Salimans 2022), with guidance weight w:

    s_w(x, t | y) = (1 + w) s(x, t | y) - w s(x, t | null),

so w = 0 is the plain conditional score, w = -1 the unconditional one, and w > 0 sharpens towards y.
The conditional and unconditional branches are one network call on a doubled batch ([x, x], [y, null]).

Classifier guidance (Dhariwal & Nichol 2021), with scale gamma and a noise-conditional classifier p_t(y | x):

    s_gamma(x, t | y) = s(x, t) + gamma grad_x log p_t(y | x).

With gamma = 1 and the exact p_t(y | x) this is Bayes' rule, grad log p_t(x | y); CFG with weight w
corresponds to gamma = 1 + w with the implicit classifier p_t(y | x) proportional to p_t(x | y) / p_t(x).

What guided sampling produces: p_0(x | y)^(1+w) p_0(x)^(-w) (normalised) is only the t = 0 tilt. The
guided score is not the score of the diffused tilt (nor of any one family of marginals in general), so
the distribution a sampler reaches depends on the sampler: the probability-flow ODE and the reverse SDE
give different results (tests/test_guidance.py integrates both in closed form for Gaussians).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from configs import ConfigError
from sde_lib import batch_mul

GUIDANCE = ("none", "cfg", "classifier")


def _per_example(w, x):
    """A scalar or per-example (B,) weight, shaped to broadcast against x (B, ...)."""
    w = jnp.asarray(w, x.dtype)
    return jnp.reshape(w, w.shape + (1,) * (x.ndim - w.ndim)) if w.ndim else w


def classifier_free_guidance(score_fn_for_labels: Callable, labels, null_label, w) -> Callable:
    """score_fn(x, t) = (1 + w) s(x, t | labels) - w s(x, t | null_label), in one call on a doubled batch.

    score_fn_for_labels(labels (2B, ...)) -> score_fn(x (2B, ...), t (2B,)), e.g.
    lambda y: models.get_score_fn(sde, model, variables, labels=y). labels are class labels (B,) with the
    null label an int, or prompts' token ids (B, L) with null_label the empty (or a negative) prompt's ids,
    (L,) or (B, L), or any pytree of conditions with null_label a pytree of the same structure, e.g.
    (None, a concat condition image (B, H, W, C_c)) with null (None, 0.0), the null image.
    w is a scalar or per-example (B,).
    w = 0 (a Python number) skips the unconditional branch: the result is then exactly the conditional score.
    """
    labels = jax.tree.map(jnp.asarray, labels) if isinstance(labels, (tuple, dict)) else jnp.asarray(labels, jnp.int32)
    if isinstance(w, (int, float)) and w == 0:
        return score_fn_for_labels(labels)
    both = score_fn_for_labels(jax.tree.map(
        lambda y, null: jnp.concatenate([y, jnp.broadcast_to(jnp.asarray(null, y.dtype), y.shape)]),
        labels, null_label))

    def score_fn(x, t):
        cond, uncond = jnp.split(both(jnp.concatenate([x, x]), jnp.concatenate([t, t])), 2)
        weight = _per_example(w, x)
        return (1.0 + weight) * cond - weight * uncond

    return score_fn


def classifier_guidance(score_fn: Callable, log_prob_fn: Callable, labels, scale) -> Callable:
    """score_fn(x, t) + scale * grad_x log p_t(labels | x).

    log_prob_fn(x, t) -> (B, K) log-probabilities (log-softmax of a noise-conditional classifier's logits).
    The gradient is that of sum_i log p_t(y_i | x_i), which is per-example because examples are independent.
    scale is a scalar or per-example (B,).
    """
    labels = jnp.asarray(labels, jnp.int32)

    def selected_log_prob(x, t):
        return jnp.sum(jnp.take_along_axis(log_prob_fn(x, t), labels[:, None], axis=-1))

    def guided(x, t):
        return score_fn(x, t) + _per_example(scale, x) * jax.grad(selected_log_prob)(x, t)

    return guided


def check_guidance(guidance: str, num_classes: int) -> None:
    """ConfigError unless `guidance` is known and, for 'cfg', the model is class-conditional."""
    if guidance not in GUIDANCE:
        raise ConfigError(f"Unknown guidance {guidance!r} (config.sampling.guidance); choose one of {list(GUIDANCE)}.")
    if guidance == "cfg" and num_classes <= 0:
        raise ConfigError("Classifier-free guidance (config.sampling.guidance='cfg') needs a class-conditional model "
                         "(config.model.num_classes > 0) trained with label dropout (config.training.label_dropout > 0).")


def guided_score_fn(score_fn_for_labels: Callable, labels, *, num_classes: int, guidance: str = "none",
                    weight: float = 0.0, log_prob_fn: Callable | None = None) -> Callable:
    """The score_fn a sampler integrates for `labels` under guidance 'none' | 'cfg' | 'classifier'.

    'none': s(x, t | labels) (labels None: the unconditional s(x, t | null) of a conditional model, or the
    score of an unconditional one); 'cfg': classifier_free_guidance with w = weight, null label num_classes;
    'classifier': classifier_guidance of the unconditional score with scale = weight and log_prob_fn.
    """
    check_guidance(guidance, num_classes)
    if guidance != "none" and labels is None:
        raise ValueError(f"Guidance {guidance!r} needs class labels to guide towards.")
    if guidance == "cfg":
        return classifier_free_guidance(score_fn_for_labels, labels, num_classes, weight)
    if guidance == "classifier":
        if log_prob_fn is None:
            raise ValueError("Classifier guidance needs a noise-conditional classifier's log_prob_fn.")
        return classifier_guidance(score_fn_for_labels(None), log_prob_fn, labels, weight)
    return score_fn_for_labels(labels)
