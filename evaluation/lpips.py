"""LPIPS (Zhang et al. 2018, v0.1 'vgg'), the perceptual distance of LDM's and VQGAN's autoencoder losses, with
weights read from local files: torchvision's VGG16 state dict (`features.N.weight`) and the LPIPS heads
(`lin0..lin4.model.1.weight`, the lpips package's `weights/v0.1/vgg.pth`). Nothing is downloaded.

With x_0, x_1 (B, H, W, 3) in [-1, 1], scaled per channel as x' = (x - shift) / scale, and f^l(x') (H_l, W_l, C_l)
the trunk's activations after the ReLUs in `taps` (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 for VGG16):

    f_hat = f / (||f||_c + 1e-10)                          (unit length over channels, per pixel)
    d(x_0, x_1) = sum_l (1 / H_l W_l) sum_{h,w} sum_c w^l_c (f_hat^l_0 - f_hat^l_1)^2_{h,w,c}

w^l >= 0 the heads' 1x1 conv weights (no bias). The trunk is a VGG: 3x3 convs (padding 1) each followed by a
ReLU, and 2x2 max pools; `cfg` lists it as torchvision does (a channel count per conv, 'M' per pool), so that
element i of torchvision's nn.Sequential, counting each ReLU, is named features_i.
"""
from __future__ import annotations

import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.pth import load_state_dict
from models.convert import ConversionError, torch_to_flax

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = (3, 8, 15, 22, 29)  # the ReLUs after conv1_2, conv2_2, conv3_3, conv4_3, conv5_3


def unit_normalize(f, eps: float = 1e-10):
    """f / (sqrt(sum_c f_c^2) + eps), over the last (channel) axis."""
    return f / (jnp.sqrt(jnp.sum(f ** 2, axis=-1, keepdims=True)) + eps)


class _Head(nn.Module):
    """lin<l>: LPIPS's NetLinLayer, whose 1x1 conv is element 1 of its Sequential (after a Dropout)."""

    @nn.compact
    def __call__(self, x):
        return nn.Conv(1, (1, 1), use_bias=False, name="model_1")(x)


class LPIPS(nn.Module):
    """d(x_0, x_1) (B,) as in the module docstring; x_0, x_1 (B, H, W, 3) in [-1, 1]."""
    cfg: Sequence = VGG16_CFG
    taps: Sequence[int] = VGG16_TAPS

    def features(self, x):
        taps, out, index = set(self.taps), [], 0
        for item in self.cfg:
            if item == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                index += 1
                continue
            x = jax.nn.relu(nn.Conv(int(item), (3, 3), padding=1, name=f"features_{index}")(x))
            index += 2
            if index - 1 in taps:
                out.append(x)
        if len(out) != len(self.taps):
            raise ValueError(f"taps {tuple(self.taps)} are not all ReLU indices of cfg {tuple(self.cfg)}.")
        return out

    @nn.compact
    def __call__(self, x0, x1):
        shift, scale = jnp.asarray(SHIFT), jnp.asarray(SCALE)
        both = (jnp.concatenate([x0, x1]) - shift) / scale
        total = 0.0
        for level, f in enumerate(self.features(both)):
            f0, f1 = jnp.split(unit_normalize(f), 2)
            total = total + jnp.mean(_Head(name=f"lin{level}")((f0 - f1) ** 2), axis=(1, 2, 3))
        return total


def _read(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise ConversionError(f"{what} file {path} does not exist; pass a local copy (nothing is downloaded).")
    return load_state_dict(path)


def load_lpips(vgg_path: str, heads_path: str, cfg: Sequence = VGG16_CFG, taps: Sequence[int] = VGG16_TAPS):
    """(LPIPS module, params) from torchvision's VGG16 state dict at vgg_path (its `classifier.*` is ignored)
    and the LPIPS heads at heads_path; a ConversionError names a missing file, or the file and the tensors
    that are missing, unexpected or of the wrong shape."""
    vgg, heads = _read(vgg_path, "VGG16 weights"), _read(heads_path, "LPIPS head weights")
    module = LPIPS(tuple(cfg), tuple(taps))
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    target = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, x)["params"]
    trunk = {k: v for k, v in target.items() if k.startswith("features_")}
    lins = {k: v for k, v in target.items() if k.startswith("lin")}
    return module, {**torch_to_flax(vgg, trunk, source=vgg_path, ignore=r"^classifier\."),
                    **torch_to_flax(heads, lins, source=heads_path)}
