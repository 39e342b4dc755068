"""The first stage of latent diffusion, LDM's autoencoder with its PatchGAN (Rombach et al. 2022; Esser et al. 2021),
as a task of the training loop (config.training.task = 'autoencoder', fields in config.autoencoder).

With x in [-1, 1] (the data's [0, 1] mapped by 2x - 1), x_hat the reconstruction (decoded from a posterior
sample z ~ q(z|x) for 'kl', from the quantised z_q for 'vq'), D the discriminator and f = adopt(step) the GAN
factor (0 before config.autoencoder.disc_start, disc_factor from then on):

    L_rec = (1/B) sum_b [ sum_{h,w,c} |x - x_hat| + w_p H W C d(x, x_hat) ]        (LDM's nll with logvar 0)
    L_AE  = L_rec + kl_weight KL(q(z|x) || N(0, I))   (or + vq_weight L_VQ)   + lambda f L_G(D(x_hat))
    L_D   = f L_hinge(D(x), D(sg[x_hat]))

lambda the adaptive weight on the decoder's last layer (losses.autoencoder.adaptive_weight) and d the perceptual
distance of config.autoencoder.perceptual: 'lpips' (evaluation.lpips from local VGG16 + head files), 'classifier'
(||phi(x) - phi(x_hat)||^2, phi the domain classifier's penultimate features, evaluation/classifier.py) or
'none'. Both players step at once, each on its own loss's gradient at the current parameters, in ONE train
state: params = {'autoencoder', 'discriminator'}, with one Adam(lr, beta1, beta2), which (elementwise) is LDM's
two Adams of equal settings, and one guarded update (training.state.apply_gradients). The discriminator runs on
batch statistics only (as it does in training), so BatchNorm's running averages are neither kept nor saved.
The perceptual network is frozen (the loop's `frozen`); the checkpoints record its files' digests. A VQ codebook
starts at taming's U(-1/K, 1/K), or with config.autoencoder.vq_init = 'data' at K of the fresh encoder's outputs
on one training batch (models.vq.codebook_from_data).

Snapshot: test images beside their reconstructions (from the posterior mean) under workdir/samples/, and their
PSNR = mean_b 10 log10(1 / MSE_b) on [0, 1] images, logged. Finish: the latent scale factor
s = 1 / std(E(2x - 1)) over config.autoencoder.scale_examples training images (config.autoencoder.scale_factor
overrides it when > 0), then the export of tasks/latent.py that latent score models read.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

import datasets
from evaluation.classifier import classifier_dir, load_domain_classifier
from evaluation.lpips import load_lpips
from evaluation.metrics import image_psnr
from losses import autoencoder as L
from models.convert import ConversionError
from models.discriminator import NORMS, NLayerDiscriminator
from models.vq import codebook_from_data
from tasks import latent
from training import parallel
from training.files import file_digest
from training.loop import Schedule
from training.state import TrainState, apply_gradients, create_train_state
from training.validation import ConfigError
from training.writers import save_image_grid

PERCEPTUAL = ("none", "lpips", "classifier")
VQ_INITS = ("uniform", "data")


def perceptual_distance(config, workdir: str):
    """(distance(frozen, x, x_hat) -> (B,) on images in [-1, 1], its frozen parameters or None, their record) for
    config.autoencoder.perceptual; a missing or mismatched weight file is refused in one line naming it."""
    a = config.autoencoder
    if a.perceptual not in PERCEPTUAL:
        raise ConfigError(f"config.autoencoder.perceptual={a.perceptual!r} must be one of {PERCEPTUAL}.")
    if a.perceptual == "none":
        return (lambda frozen, x, x_hat: jnp.zeros(x.shape[0])), None, {"perceptual": "none"}
    if a.perceptual == "lpips":
        if not (a.lpips_vgg_path and a.lpips_heads_path):
            raise ConfigError("config.autoencoder.perceptual='lpips' needs config.autoencoder.lpips_vgg_path "
                              "(torchvision's vgg16 .pth) and lpips_heads_path (lpips' weights/v0.1/vgg.pth).")
        try:
            module, params = load_lpips(a.lpips_vgg_path, a.lpips_heads_path)
        except ConversionError as e:
            raise ConfigError(f"config.autoencoder.perceptual='lpips': {e}") from e

        def lpips(frozen, x, x_hat):
            rgb = (lambda v: jnp.repeat(v, 3, axis=-1)) if x.shape[-1] == 1 else (lambda v: v)
            return module.apply({"params": frozen}, rgb(x), rgb(x_hat))

        files = {p: file_digest(p) for p in (a.lpips_vgg_path, a.lpips_heads_path)}
        return lpips, params, {"perceptual": "lpips", "files": files}
    folder = classifier_dir(config, workdir)
    model, params, _ = load_domain_classifier(config, folder)

    def features(frozen, x):
        return model.apply({"params": frozen}, (x + 1.0) / 2.0)["features"]

    def classifier_distance(frozen, x, x_hat):
        return jnp.sum((features(frozen, x) - features(frozen, x_hat)) ** 2, axis=-1)

    path = os.path.join(folder, "classifier.npz")
    return classifier_distance, params, {"perceptual": "classifier", "files": {path: file_digest(path)}}


def psnr(x, x_hat) -> jax.Array:
    """mean_b PSNR_b of images in [0, 1] (evaluation.metrics.image_psnr)."""
    return jnp.mean(image_psnr(x, x_hat))


class AutoencoderTask:
    """config.autoencoder's autoencoder and discriminator on config.data (see the module docstring)."""

    augment = True

    def __init__(self, config, workdir: str):
        a, d = config.autoencoder, config.data
        self.config, self.workdir, self.arch = config, workdir, latent.architecture(config)
        f = latent.downsampling(self.arch)
        if d.image_size % f:
            raise ConfigError(f"config.data.image_size={d.image_size} must be divisible by {f}, the downsampling "
                              f"of the {len(a.block_out_channels)} levels of config.autoencoder.block_out_channels.")
        if a.vq_init not in VQ_INITS:
            raise ConfigError(f"config.autoencoder.vq_init={a.vq_init!r} must be one of {VQ_INITS}.")
        if a.disc_norm not in NORMS:
            raise ConfigError(f"config.autoencoder.disc_norm={a.disc_norm!r} must be one of {NORMS}.")
        if d.image_size // 2 ** a.disc_layers < 3:
            raise ConfigError(f"config.autoencoder.disc_layers={a.disc_layers} halves {d.image_size}-pixel images "
                              f"below 3 pixels; use fewer layers.")
        self.distance, self.frozen, self.frozen_record = perceptual_distance(config, workdir)
        self.schedule = Schedule.from_config(config)
        parallel.check_divisible("training.snapshot_num_samples", config.training.snapshot_num_samples,
                                 parallel.make_mesh().size)
        self.model = latent.build(self.arch)
        self.discriminator = NLayerDiscriminator(ndf=a.disc_ndf, n_layers=a.disc_layers, norm=a.disc_norm)
        self.optimizer = optax.adam(a.lr, b1=a.beta1, b2=a.beta2)
        self.learning_rate = lambda step: a.lr
        self.train_data, self.eval_data = datasets.get_dataset(config)
        self._shown = datasets.load_split(config, "test", host_index=0, host_count=1)
        self._shown_images = next(self._shown.ordered_batches(config.training.snapshot_num_samples))["image"]
        self.reconstruct = jax.jit(lambda params, x: (self.model.apply({"params": params}, 2.0 * x - 1.0)[0]
                                                      + 1.0) / 2.0)
        logging.info("Autoencoder (%s, %d -> %d latents): perceptual loss %s.", a.kind, d.image_size,
                     d.image_size // f, self.frozen_record)

    def init_state(self) -> TrainState:
        ae_rng, disc_rng, state_rng = jax.random.split(jax.random.PRNGKey(self.config.seed), 3)
        d = self.config.data
        x = jnp.zeros((1, d.image_size, d.image_size, d.num_channels))
        autoencoder = self.model.init(ae_rng, x)["params"]
        if self.arch["kind"] == "vq" and self.config.autoencoder.vq_init == "data":
            autoencoder = self._codebook_from_data(autoencoder, jax.random.fold_in(ae_rng, 1))
        params = {"autoencoder": autoencoder, "discriminator": self.discriminator.init(disc_rng, x)["params"]}
        return create_train_state(state_rng, {"params": params}, self.optimizer, ema=False)

    def _codebook_from_data(self, ae_params, rng):
        """ae_params with the codebook drawn from the fresh encoder's outputs z_e on one batch of training images
        (models.vq.codebook_from_data; the images picked with config.seed)."""
        data, batch = self.train_data, self.config.training.batch_size
        picked = np.random.default_rng(self.config.seed).choice(len(data), min(batch, len(data)), replace=False)
        x = 2.0 * jnp.asarray(data.source.read(np.sort(picked))[0], jnp.float32) / 255.0 - 1.0
        z_e = self.model.apply({"params": ae_params}, x, method="encode")
        codebook = codebook_from_data(z_e, self.arch["num_vq_embeddings"], rng)
        quantize = {**ae_params["quantize"], "embedding": {"embedding": codebook}}
        return {**ae_params, "quantize": quantize}

    def logits(self, disc_params, x):
        """D(x), on batch statistics: BatchNorm's running averages are computed and dropped."""
        if self.config.autoencoder.disc_norm == "batch":
            return self.discriminator.apply({"params": disc_params}, x, mutable=["batch_stats"])[0]
        return self.discriminator.apply({"params": disc_params}, x)

    def reconstruction_loss(self, frozen, x, x_hat) -> jax.Array:
        """L_rec of the module docstring."""
        hwc = np.prod(x.shape[1:])
        w = self.config.autoencoder.perceptual_weight
        return L.l1_reconstruction(x, x_hat) + w * hwc * jnp.mean(self.distance(frozen, x, x_hat))

    def forward(self, ae_params, x, rng):
        """(x_hat, the regulariser: KL(q || N(0, I)) for 'kl', L_VQ for 'vq')."""
        if self.arch["kind"] == "kl":
            x_hat, q = self.model.apply({"params": ae_params}, x, rng)
            return x_hat, L.kl_to_standard_normal(q.mean, q.logvar)
        x_hat, vq_loss, _ = self.model.apply({"params": ae_params}, x)
        return x_hat, vq_loss

    def losses(self, params, x, rng, step, frozen) -> tuple[jax.Array, dict]:
        """(L_AE, its pieces) as in the module docstring; pieces: rec, reg, gen, disc (L_D), weight (lambda),
        factor (f) and x_hat."""
        a = self.config.autoencoder
        reg_weight = a.kl_weight if self.arch["kind"] == "kl" else a.vq_weight

        def rec_and_gen(ae_params):
            x_hat, reg = self.forward(ae_params, x, rng)
            rec = self.reconstruction_loss(frozen, x, x_hat)
            return (rec, L.generator_loss(self.logits(params["discriminator"], x_hat))), (reg, x_hat)

        (rec, gen), vjp, (reg, x_hat) = L.leaf_vjp(rec_and_gen, params["autoencoder"])
        weight = L.adaptive_weight(vjp((1.0, 0.0)), vjp((0.0, 1.0)), a.disc_weight)
        factor = L.adopt_weight(a.disc_factor, step, a.disc_start)
        total = rec + reg_weight * reg + weight * factor * gen
        fake = jax.lax.stop_gradient(x_hat)
        disc = factor * L.hinge_discriminator_loss(self.logits(params["discriminator"], x), self.logits(
            params["discriminator"], fake))
        return total, {"rec": rec, "reg": reg, "gen": gen, "disc": disc, "weight": weight, "factor": factor,
                       "x_hat": x_hat}

    def train_step(self, state: TrainState, batch, frozen):
        """One guarded step of both players: grads = {autoencoder: dL_AE/dtheta, discriminator: dL_D/dphi};
        the loss reported is L_AE (a NaN/inf in L_D reaches the guard through its gradient's norm)."""
        rng, step_rng = jax.random.split(state.rng)
        x = 2.0 * batch["image"] - 1.0

        def ae_loss(ae_params):
            return self.losses({**state.params, "autoencoder": ae_params}, x, step_rng, state.step, frozen)

        (loss, pieces), ae_grads = jax.value_and_grad(ae_loss, has_aux=True)(state.params["autoencoder"])
        fake = pieces["x_hat"]

        def disc_loss(disc_params):
            logits = lambda v: self.logits(disc_params, v)  # noqa: E731
            return pieces["factor"] * L.hinge_discriminator_loss(logits(x), logits(fake))

        disc_grads = jax.grad(disc_loss)(state.params["discriminator"])
        return apply_gradients(state, loss, {"autoencoder": ae_grads, "discriminator": disc_grads},
                               self.optimizer, rng)

    def eval_step(self, state: TrainState, batch, frozen):
        """L_rec of the test batch, reconstructed from the posterior mean (KL) or the quantised latent (VQ)."""
        x = 2.0 * batch["image"] - 1.0
        x_hat = self.model.apply({"params": state.params["autoencoder"]}, x)[0]
        return self.reconstruction_loss(frozen, x, x_hat)

    def snapshot(self, state: TrainState, step: int) -> None:
        x = self._shown_images
        x_hat = np.clip(parallel.gather(self.reconstruct(state.params["autoencoder"], x)), 0.0, 1.0)
        value = float(psnr(x, x_hat))
        if jax.process_index() == 0:
            rows = 8  # a row of originals above the row of their reconstructions
            pairs = [part for k in range(0, len(x), rows) for part in (x[k:k + rows], x_hat[k:k + rows])]
            path = os.path.join(self.workdir, "samples", f"step_{step:08d}.png")
            save_image_grid(np.concatenate(pairs), path, nrow=min(rows, len(x)))
            logging.info("Step %d: reconstructions of %d test images written to %s; PSNR %.2f dB.", step, len(x),
                         path, value)

    def latent_std(self, params) -> tuple[float, int]:
        """(std of E(2x - 1), N) over the first N = scale_examples training images (in order, no flips)."""
        n = self.config.autoencoder.scale_examples
        train = datasets.load_split(self.config, "train", host_index=0, host_count=1)
        encode = jax.jit(lambda p, v: latent.unscaled_latents(self.model, p, v))
        parts, count = [], 0
        for batch in train.ordered_batches(self.config.eval.batch_size):
            parts.append(np.asarray(encode(params, batch["image"]))[batch["mask"] > 0])
            count += len(parts[-1])
            if count >= n:
                break
        z = np.concatenate(parts)[:n]
        return float(np.std(z.astype(np.float64))), len(z)

    def finish(self, state: TrainState) -> str:
        """Measure the latent scale and write the export (process 0); returns the JSON's path."""
        a, d = self.config.autoencoder, self.config.data
        params = jax.device_get(state.params["autoencoder"])
        std, n = self.latent_std(params)
        scale = a.scale_factor if a.scale_factor > 0 else 1.0 / std
        path = os.path.join(self.workdir, latent.EXPORT_FILE)
        if jax.process_index() == 0:
            latent.save_export(self.workdir, self.arch, params, scale_factor=scale, latent_std=std,
                               scale_examples=n, dataset=d.dataset, image_size=d.image_size,
                               num_channels=d.num_channels, step=int(state.step), perceptual=self.frozen_record)
        logging.info("Latent std %.4g over %d training images: scale factor %.4g%s; exported to %s.", std,
                     n, scale, " (config.autoencoder.scale_factor)" if a.scale_factor > 0 else "",
                     path)
        return path
