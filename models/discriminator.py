"""The PatchGAN discriminator of pix2pix (Isola et al. 2017) as taming-transformers / LDM use it
(NLayerDiscriminator): one real/fake logit per overlapping image patch.

    conv4x4/2(C_in -> ndf), LeakyReLU(0.2)
    for n = 1..n_layers-1:  conv4x4/2(ndf m_{n-1} -> ndf m_n), norm, LeakyReLU(0.2)      m_n = min(2^n, 8)
    conv4x4/1(ndf m_{n_layers-1} -> ndf m_{n_layers}), norm, LeakyReLU(0.2)
    conv4x4/1(-> 1)

every conv padded by 1, so a side H becomes H / 2^n_layers - 2 (H / 2^n_layers must be at least 3). Submodules
are named after the reference's nn.Sequential indices (main_0, main_2, main_3, ...), so its conv weights map by
models.convert's rule; convs followed by a norm have no bias, as in the reference. Weights start as the
reference's: conv N(0, 0.02^2), norm scale N(1, 0.02^2), biases 0.
"""
from __future__ import annotations

import flax.linen as nn
import jax

NORMS = ("batch", "none")


def _norm_scale_init(rng, shape, dtype):
    return 1.0 + 0.02 * jax.random.normal(rng, shape, dtype)


class NLayerDiscriminator(nn.Module):
    """x (B, H, W, C) in [-1, 1] -> logits (B, H / 2^n_layers - 2, W / 2^n_layers - 2, 1).

    norm: 'batch' (the reference's BatchNorm; batch statistics when train=True, updating the 'batch_stats'
    collection, which the caller marks mutable) or 'none'.
    """
    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.norm not in NORMS:
            raise ValueError(f"norm {self.norm!r} is not one of {NORMS}.")
        index = 0

        def conv(features, stride, bias):
            nonlocal index
            layer = nn.Conv(features, (4, 4), strides=stride, padding=1, use_bias=bias,
                            kernel_init=nn.initializers.normal(0.02), name=f"main_{index}")
            index += 1
            return layer

        def norm_act(h):
            nonlocal index
            if self.norm == "batch":
                h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 scale_init=_norm_scale_init, name=f"main_{index}")(h)
                index += 1
            index += 1  # the LeakyReLU's slot in the reference's Sequential
            return nn.leaky_relu(h, 0.2)

        with_bias = self.norm == "none"
        h = conv(self.ndf, 2, True)(x)
        h = nn.leaky_relu(h, 0.2)
        index += 1
        for n in range(1, self.n_layers + 1):
            h = conv(self.ndf * min(2 ** n, 8), 2 if n < self.n_layers else 1, with_bias)(h)
            h = norm_act(h)
        return conv(1, 1, True)(h)
