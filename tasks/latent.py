"""A trained autoencoder as the later stages see it: its export, and images <-> scaled latents.

The autoencoder's run (tasks/autoencoder.py) ends by writing, in its workdir,

    autoencoder.npz    the autoencoder's parameters (flattened 'a/b/c' keys)
    autoencoder.json   its architecture, the data it was trained on (dataset, image_size, num_channels), the
                       step, a digest of the parameters and the latent scale factor s

A latent score model (config.latent.autoencoder_dir) works on the scaled latents of its images,

    z = s * E(2x - 1),   x in [0, 1],   E(.) the posterior mean (KL) or the pre-quantisation z_e (VQ),

s = 1 / std(E(2x - 1)) over the training split, so that z has unit variance like the SDE's data (Rombach et
al. 2022, sec. 4.3.2 and appendix G); samples are decoded as x = (D(z / s) + 1) / 2, through the codebook
for VQ (LDM decodes a VQ latent by quantising it first).
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from models.autoencoder import AutoencoderKL
from models.vq import VQModel
from tasks import concat
from training.files import atomic_savez, atomic_write_json, tree_digest
from training.validation import ConfigError

WEIGHTS_FILE, EXPORT_FILE = "autoencoder.npz", "autoencoder.json"
KINDS = ("kl", "vq")


def architecture(config) -> dict:
    """The autoencoder of config.autoencoder for config.data's channels, as the JSON export records it."""
    a = config.autoencoder
    if a.kind not in KINDS:
        raise ConfigError(f"config.autoencoder.kind={a.kind!r} must be one of {KINDS}.")
    arch = {"kind": a.kind, "in_channels": config.data.num_channels, "out_channels": config.data.num_channels,
            "latent_channels": a.latent_channels, "block_out_channels": list(a.block_out_channels),
            "layers_per_block": a.layers_per_block, "norm_num_groups": a.norm_num_groups,
            "mid_block_add_attention": a.mid_block_attention}
    if a.kind == "vq":
        arch.update(num_vq_embeddings=a.num_vq_embeddings, beta=a.vq_beta)
    return arch


def build(arch: dict):
    """The Flax module an architecture dict describes."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items() if k != "kind"}
    return (AutoencoderKL if arch["kind"] == "kl" else VQModel)(**fields)


def downsampling(arch: dict) -> int:
    """f = H / h = 2^(L-1) for L = len(block_out_channels)."""
    return 2 ** (len(arch["block_out_channels"]) - 1)


def save_export(folder: str, arch: dict, params, **meta) -> str:
    """Write params to folder/autoencoder.npz, then the architecture and `meta` to folder/autoencoder.json
    (atomically, in that order: a JSON present means its weights are complete); returns the JSON's path."""
    params = jax.device_get(params)
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    atomic_savez(os.path.join(folder, WEIGHTS_FILE), **flat)
    path = os.path.join(folder, EXPORT_FILE)
    atomic_write_json(path, {"architecture": arch, "digest": tree_digest(params), **meta})
    return path


def unscaled_latents(module, params, images):
    """E(2x - 1) for images x in [0, 1]: the posterior mean (KL) or z_e before quantisation (VQ)."""
    out = module.apply({"params": params}, 2.0 * jnp.asarray(images, jnp.float32) - 1.0, method=module.encode)
    return out[0] if isinstance(module, AutoencoderKL) else out


@dataclasses.dataclass(frozen=True)
class Latents:
    """An exported autoencoder: encode(params, x in [0, 1]) -> z = s E(2x - 1), decode(params, z) -> x in [0, 1]
    (both jit-able, params passed in so that a caller can keep them frozen outside its train state)."""

    folder: str
    module: object
    params: dict
    meta: dict

    @property
    def scale(self) -> float:
        return float(self.meta["scale_factor"])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(h, w, c) of one latent."""
        h = self.meta["image_size"] // downsampling(self.meta["architecture"])
        arch = self.meta["architecture"]
        return h, h, arch.get("vq_embed_dim") or arch["latent_channels"]

    def record(self) -> dict:
        """What a run trained on these latents records in its checkpoints (the loop's frozen_record)."""
        return {"autoencoder": self.folder, "step": self.meta["step"], "digest": self.meta["digest"],
                "scale_factor": self.scale}

    def encode(self, params, images):
        return self.scale * unscaled_latents(self.module, params, images)

    def decode(self, params, z):
        z = z / self.scale
        if self.meta["architecture"]["kind"] == "vq":
            z = self.module.apply({"params": params}, z, method=self.module.vector_quantize)[0]
        x = self.module.apply({"params": params}, z, method=self.module.decode)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def load_export(folder: str) -> Latents:
    """The autoencoder exported in `folder`; a ConfigError in one line when there is none."""
    path = os.path.join(folder, EXPORT_FILE)
    if not os.path.isdir(folder):
        raise ConfigError(f"config.latent.autoencoder_dir={folder} does not exist; train the autoencoder first "
                          f"(--mode train with config.training.task='autoencoder' and --workdir {folder}).")
    if not os.path.isfile(path):
        has_checkpoints = os.path.isdir(os.path.join(folder, "checkpoints"))
        raise ConfigError(f"The autoencoder run {folder} has no {EXPORT_FILE}"
                          + (" (it has checkpoints: rerun its training command to finish it and export)."
                             if has_checkpoints else "; train it to the end first (config.training.task="
                             "'autoencoder')."))
    with open(path) as f:
        meta = json.load(f)
    with np.load(os.path.join(folder, WEIGHTS_FILE), allow_pickle=False) as data:
        params = traverse_util.unflatten_dict({tuple(k.split("/")): data[k] for k in data.files})
    return Latents(os.path.abspath(folder), build(meta["architecture"]), params, meta)


def open_for(config) -> Latents:
    """The autoencoder of config.latent.autoencoder_dir, refused in one line unless it was trained on
    config.data's image size and channel count."""
    latents = load_export(config.latent.autoencoder_dir)
    d, m = config.data, latents.meta
    if (m["image_size"], m["num_channels"]) != (d.image_size, d.num_channels):
        raise ConfigError(f"The autoencoder in {latents.folder} was trained on {m['image_size']}x{m['image_size']}"
                          f"x{m['num_channels']} images ({m['dataset']}), but config.data gives {d.image_size}x"
                          f"{d.image_size}x{d.num_channels}; use its image size and channels, or train another.")
    return latents


def score_config(config, latents: Latents):
    """config for the score network on latents: data.image_size / num_channels the latent's (h, c), data
    centered (the latents are already zero-mean, unit-scale: no [0, 1] -> [-1, 1] map applies); a concat
    condition keeps its pixel channels (config.concat.channels)."""
    h, _, c = latents.shape
    net = config.copy_and_resolve_references()
    with net.unlocked():
        if concat.enabled(config):
            net.concat.channels = concat.channels(config)
        net.data.image_size, net.data.num_channels, net.data.centered = h, c, True
    return net


@dataclasses.dataclass(frozen=True)
class ScoreSpace:
    """Where a score model lives: net_config (config, or score_config's for latents); for latents, the frozen
    parameters and their record (the loop's frozen / frozen_record), encode(images, frozen) -> x_0 and
    decode(x) -> images in [0, 1]; all None (record {}) in pixel space."""

    net_config: object
    latents: Latents | None = None
    frozen: dict | None = None
    record: dict = dataclasses.field(default_factory=dict)
    encode: object = None
    decode: object = None


def score_space(config) -> ScoreSpace:
    """The ScoreSpace of config: pixels, or the latents of config.latent.autoencoder_dir (checked by open_for)."""
    if not config.latent.autoencoder_dir:
        return ScoreSpace(config)
    latents = open_for(config)
    return ScoreSpace(score_config(config, latents), latents, {"autoencoder": latents.params}, latents.record(),
                      encode=lambda images, frozen: latents.encode(frozen["autoencoder"], images),
                      decode=lambda x: latents.decode(latents.params, x))
