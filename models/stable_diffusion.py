"""A diffusers Stable Diffusion (/ ControlNet) pipeline folder read into this framework's components.

    folder/model_index.json          names the components; each is a subfolder
    folder/scheduler/scheduler_config.json  ->  the SDE: the discrete VP chain with the scheduler's betas
    folder/unet/                     ->  the score network (SDScoreNet), predicting epsilon, v or x0; an
                                         inpainting U-Net (in_channels 2 C + 1) also takes [m, E(x (1 - m))]
    folder/text_encoder/             ->  the CLIP text transformer (its last_hidden_state is the context)
    folder/tokenizer/                ->  located here; read by data_sources.tokenizer (models sit below it)
    folder/vae/                      ->  the AutoencoderKL and its scaling_factor (x = decode(z / scaling_factor))
    a ControlNet folder (optional)   ->  residuals added to the U-Net's skips, inside SDScoreNet

The SDE: a scheduler's betas are beta_i, i = 0..N-1, N = num_train_timesteps, with

    linear            beta_i = beta_start + i (beta_end - beta_start) / (N - 1)
    scaled_linear     beta_i = (sqrt(beta_start) + i (sqrt(beta_end) - sqrt(beta_start)) / (N - 1))^2
    squaredcos_cap_v2 beta_i = min(1 - alpha_bar((i+1)/N) / alpha_bar(i/N), 0.999), alpha_bar(s) = cos^2((s + 0.008)
                      / 1.008 pi / 2)

which are the chains of sde_lib.VPSDE(beta_min = N beta_start, beta_max = N beta_end, N, beta_schedule) with
beta_schedule 'linear', 'scaled_linear' and 'cosine'. Its discrete_labels='floor_index' feeds the U-Net the
integer step i = floor(t (N - 1)) and (alpha_i, sigma_i) = (sqrt(alpha_bar_i), sqrt(1 - alpha_bar_i)), so
models.get_score_fn(sde, model, variables, continuous=False, context=...) is s = -eps_hat / sigma_i.
Everything unsupported (another scheduler family, trained_betas, zero-SNR rescaling, a missing component) is
refused with one ConversionError sentence.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import ml_collections

import sde_lib
from models import autoencoder, clip_text, controlnet, unet2d_condition
from models.convert import ConversionError

#: Schedulers whose noise process is the discrete VP chain of their betas (any of them sets the SDE; the
#: framework's own samplers integrate it).
VP_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
                 "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                 "HeunDiscreteScheduler", "DEISMultistepScheduler")
#: diffusers' beta_schedule -> sde_lib's beta_schedule.
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
#: diffusers' prediction_type -> models.score_fn.PREDICTIONS.
PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """What the pipeline's scheduler config fixes: the SDE, the U-Net's prediction, and DDIM's step
    conventions (steps_offset, set_alpha_to_one, timestep_spacing; samplers/ddim.py with discrete=True)."""

    sde: sde_lib.VPSDE
    prediction: str
    steps_offset: int
    set_alpha_to_one: bool
    spacing: str = "leading"


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise ConversionError(f"{path} does not exist; {what}.")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ConversionError(f"{path} is not readable JSON ({err}).") from None


def read_scheduler(folder: str) -> Scheduler:
    """The Scheduler of a diffusers scheduler/ folder (scheduler_config.json; see the module docstring)."""
    path = os.path.join(folder, "scheduler_config.json")
    cfg = _read_json(path, "a Stable Diffusion pipeline's scheduler/ holds its scheduler_config.json")
    kind, schedule = cfg.get("_class_name"), cfg.get("beta_schedule", "linear")
    prediction = cfg.get("prediction_type", "epsilon")
    spacing = cfg.get("timestep_spacing", "leading")
    problem = (f"_class_name {kind!r} is not a discrete VP scheduler (supported: {', '.join(VP_SCHEDULERS)})"
               if kind not in VP_SCHEDULERS else
               f"beta_schedule {schedule!r} is not supported (choose one of {sorted(BETA_SCHEDULES)})"
               if schedule not in BETA_SCHEDULES else
               f"prediction_type {prediction!r} is not supported (choose one of {sorted(PREDICTION_TYPES)})"
               if prediction not in PREDICTION_TYPES else
               "trained_betas are set (only beta_schedule betas are supported)" if cfg.get("trained_betas") else
               "rescale_betas_zero_snr is set (not supported)" if cfg.get("rescale_betas_zero_snr") else None)
    if problem:
        raise ConversionError(f"{path}: {problem}.")
    n = int(cfg.get("num_train_timesteps", 1000))
    sde = sde_lib.VPSDE(beta_min=n * float(cfg.get("beta_start", 0.0001)), beta_max=n * float(cfg.get("beta_end", 0.02)),
                        N=n, discrete_labels="floor_index", beta_schedule=BETA_SCHEDULES[schedule])
    return Scheduler(sde, PREDICTION_TYPES[prediction], int(cfg.get("steps_offset", 0)),
                     bool(cfg.get("set_alpha_to_one", True)), spacing)


class SDScoreNet(nn.Module):
    """The U-Net (+ ControlNet) as a score network: model(x, time_cond, labels=None, train=False, context=None,
    control_image=None, conditioning_scale=1.0, concat=None), params {'unet': ..., 'controlnet': ...}; time_cond
    is the chain step, control_image (B, f h, f w, C_c) in [0, 1] for latents (B, h, w, C), concat (B, h, w, C_c)
    the inpainting U-Net's further input channels [m, E(x (1 - m))] (C + C_c = the U-Net's in_channels).
    `config.model.prediction` tells models.get_score_fn what the U-Net predicts."""

    config: ml_collections.ConfigDict
    unet: unet2d_condition.UNetSpec
    control: controlnet.ControlNetSpec | None = None

    @nn.compact
    def __call__(self, x, time_cond, labels=None, train: bool = False, context=None, control_image=None,
                 conditioning_scale=1.0, concat=None):
        if labels is not None:
            raise ValueError("Stable Diffusion's U-Net takes no class labels; condition it through context.")
        given = x.shape[-1] + (0 if concat is None else concat.shape[-1])
        if given != self.unet.in_channels:
            raise ValueError(f"The U-Net takes {self.unet.in_channels} input channels; it was given {given} "
                             f"({x.shape[-1]} latent + {given - x.shape[-1]} concat).")
        residuals = None
        if self.control is not None:
            residuals = controlnet.ControlNetModel(self.control, name="controlnet")(
                x, time_cond, context, control_image, conditioning_scale, train=train)
        return unet2d_condition.UNet2DConditionModel(self.unet, name="unet")(x, time_cond, context, residuals,
                                                                            train=train, concat=concat)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """A pipeline's components (module docstring); apply the score network as models.get_score_fn(
    scheduler.sde, model, variables, continuous=False, context=..., control_image=...)."""

    scheduler: Scheduler
    model: SDScoreNet
    variables: dict
    text_encoder: clip_text.CLIPTextTransformer
    text_params: Any
    tokenizer_folder: str
    vae: autoencoder.AutoencoderKL
    vae_params: Any
    scaling_factor: float
    latent_size: int  # the U-Net's sample_size (latent pixels a side), its default resolution

    @property
    def inpainting(self) -> bool:
        """Whether the U-Net is an inpainting one: conv_in takes [z, m, E(x (1 - m))], 2 C + 1 channels."""
        return self.model.unet.in_channels == 2 * self.vae.latent_channels + 1

    @property
    def vae_factor(self) -> int:
        """Pixels per latent pixel: 2^(levels - 1) of the autoencoder."""
        return 2 ** (len(self.vae.block_out_channels) - 1)

    @property
    def control_factor(self) -> int:
        """Control-image pixels per latent pixel: the ControlNet hint encoder's 2^(steps)."""
        return 2 ** (len(self.model.control.conditioning_embedding_out_channels) - 1)


def component_folders(folder: str) -> dict[str, str]:
    """{component: its subfolder} of a pipeline folder, each of COMPONENTS checked to be there."""
    index = _read_json(os.path.join(folder, "model_index.json"), "point at a diffusers Stable Diffusion pipeline "
                       "folder (what StableDiffusionPipeline.save_pretrained writes)")
    missing = [c for c in COMPONENTS if not os.path.isdir(os.path.join(folder, c))]
    if missing:
        named = [c for c in missing if c in index]
        raise ConversionError(f"The pipeline folder {folder} has no {', '.join(c + '/' for c in missing)}"
                              + (f" (model_index.json names {', '.join(named)})" if named else "")
                              + "; copy the missing component(s) there.")
    return {c: os.path.join(folder, c) for c in COMPONENTS}


def read_pipeline(folder: str, controlnet_folder: str = "", dtype: str = "float32") -> Pipeline:
    """The Pipeline of a diffusers folder, with the ControlNet of `controlnet_folder` (or of the folder's own
    controlnet/, when model_index.json names one) added to the U-Net."""
    parts = component_folders(folder)
    scheduler = read_scheduler(parts["scheduler"])
    unet, unet_params = unet2d_condition.from_diffusers(parts["unet"], dtype)
    if not controlnet_folder and os.path.isdir(os.path.join(folder, "controlnet")):
        controlnet_folder = os.path.join(folder, "controlnet")
    control, params = None, {"unet": unet_params}
    if controlnet_folder:
        net, params["controlnet"] = controlnet.from_diffusers(controlnet_folder, dtype)
        control = net.spec
        if dataclasses.replace(control.unet, up_block_types=unet.spec.up_block_types) != unet.spec:
            raise ConversionError(f"The ControlNet {controlnet_folder} was made for another U-Net than {parts['unet']} "
                                  f"(their configs differ); use the ControlNet of this base model.")
    config = ml_collections.ConfigDict({"model": {"prediction": scheduler.prediction}})
    text_encoder, text_params = clip_text.from_pretrained(parts["text_encoder"])
    vae, vae_params, scaling_factor = autoencoder.load_diffusers_autoencoder_kl(parts["vae"])
    c = vae.latent_channels
    if (unet.spec.in_channels not in (c, 2 * c + 1) or unet.spec.out_channels != c
            or text_encoder.config.hidden_size != unet.spec.cross_attention_dim):
        raise ConversionError(f"The components of {folder} do not fit together: the U-Net takes "
                              f"{unet.spec.in_channels} input channels, gives {unet.spec.out_channels} and reads a "
                              f"context of width {unet.spec.cross_attention_dim}; the VAE's {c} latent channels need "
                              f"{c} in ({2 * c + 1} for inpainting: latents, mask, masked-image latents) and {c} out, "
                              f"the text encoder gives width {text_encoder.config.hidden_size}.")
    return Pipeline(scheduler, SDScoreNet(config, unet.spec, control), {"params": params}, text_encoder, text_params,
                    parts["tokenizer"], vae, vae_params, scaling_factor,
                    int(_read_json(os.path.join(parts["unet"], "config.json"), "").get("sample_size", 64)))
