"""A Stable Diffusion / ControlNet pipeline folder assembled from the component fixtures (../shared/fixtures/
stable_diffusion) with a tiny tokenizer and a scheduler config: its first DDIM step equals the one computed
from diffusers' U-Net output, it samples end to end through --mode sample's pipeline path, and bad folders are
one line."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import models
import sde_lib
from configs.sd import pipeline as pipeline_config
from models import stable_diffusion
from models.convert import ConversionError
from training.validation import ConfigError
from modes.sd_sample import latent_mask, masked_latents, sample_pipeline
from samplers import get_sampler
from samplers.ddim import chain_grid as ddimchain_grid
from samplers.ddim import chain_steps, ddim_update
from tests.reference_fixtures import fixture_path, load_io, nchw_to_nhwc, relative_error
from tests.test_sd_unet import inpainting_unet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEDULER = {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
             "set_alpha_to_one": False, "clip_sample": False}


def write_tokenizer(folder):
    """A CLIP BPE vocabulary of the 26 letters (word-internal and word-final), two merges, bos 998, eos 999: ids
    below the fixture text encoder's vocab_size 1000."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {s: i for i, s in enumerate(letters + [c + "</w>" for c in letters] + ["re", "red</w>"])}
    vocab.update({"<|startoftext|>": 998, "<|endoftext|>": 999})
    os.makedirs(folder)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\nr e\nre d</w>\n")


def make_pipeline(root, scheduler=SCHEDULER, skip=(), unet=None):
    """A diffusers-layout pipeline folder: the fixtures' unet (or the folder `unet`), vae, text_encoder linked in."""
    os.makedirs(root)
    for part in ("unet", "vae", "text_encoder"):
        if part not in skip:
            source = unet if part == "unet" and unet else fixture_path("stable_diffusion", part)
            os.symlink(source, os.path.join(root, part))
    write_tokenizer(os.path.join(root, "tokenizer"))
    os.makedirs(os.path.join(root, "scheduler"))
    with open(os.path.join(root, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler, f)
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", scheduler["_class_name"]]}
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump(index, f)
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_pipeline(tmp_path_factory.mktemp("sd") / "pipeline")


def test_first_ddim_step_is_the_one_from_diffusers_unet_output(folder):
    pipe = stable_diffusion.read_pipeline(folder)
    sde = pipe.scheduler.sde
    io = load_io("stable_diffusion", "unet", "io.npz")
    x, steps, eps = nchw_to_nhwc(io["sample"]), io["timesteps"], nchw_to_nhwc(io["out"])
    assert chain_steps(sde, 50, pipe.scheduler.steps_offset)[:2].tolist() == [981, 961] == [steps[0], 961]

    score = jax.jit(models.get_score_fn(sde, pipe.model, pipe.variables, continuous=False,
                                        context=jnp.asarray(io["encoder_hidden_states"])))(
        jnp.asarray(x), sde.step_time(jnp.asarray(steps, jnp.float32)))
    alpha, sigma = sde.discrete_marginal_coeffs(jnp.asarray(steps))
    # example 0 steps 981 -> 961 (SD's first of 50 steps); example 1 from 17 to the end (alpha_bar_0: set_alpha_to_one
    # False)
    ours = ddim_update(jnp.asarray(x), score, (alpha, sigma), sde.discrete_marginal_coeffs(jnp.asarray([961, 0])))

    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2  # diffusers' scaled_linear
    alpha_bar = np.cumprod(1.0 - betas)
    a, a_prev = alpha_bar[steps][:, None, None, None], alpha_bar[[961, 0]][:, None, None, None]
    x0 = (x - np.sqrt(1.0 - a) * eps) / np.sqrt(a)
    reference = np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps
    errors = {"eps": relative_error(-sigma[:, None, None, None] * score, eps), "step": relative_error(ours, reference),
              "alpha_bar": float(np.max(np.abs(np.asarray(alpha) ** 2 - alpha_bar[steps]) / alpha_bar[steps]))}
    print({k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-4, errors


def test_controlnet_pipeline_samples_end_to_end(folder, tmp_path):
    edges = np.zeros((16, 16, 3), np.uint8)
    edges[4:12, 8] = 255
    Image.fromarray(edges).save(tmp_path / "edges.png")
    config = pipeline_config.get_config()
    sd = config.sd
    sd.path, sd.controlnet, sd.control_image = folder, fixture_path("stable_diffusion", "controlnet"), \
        str(tmp_path / "edges.png")
    sd.prompt, sd.negative_prompt, sd.num_steps, sd.num_samples, sd.conditioning_scale = "a red cat", "", 2, 2, 0.7
    path = sample_pipeline(config, str(tmp_path), "samples")
    images = np.load(path)["image"]
    assert images.shape == (2, 16, 16, 3) and os.path.isfile(path.replace(".npz", ".png"))
    assert np.any(images[0] != images[1])  # two draws from the prior


def inpaint_files(tmp_path, mask_box=(slice(4, 12), slice(0, 8))):
    """A 16 x 16 image and a mask, white (fill) on mask_box, in the new folder tmp_path."""
    tmp_path.mkdir()
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[mask_box] = 255
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return str(tmp_path / "image.png"), str(tmp_path / "mask.png")


def inpaint_config(path, image="", mask=""):
    config = pipeline_config.get_config()
    sd = config.sd
    sd.path, sd.image, sd.mask_image = path, image, mask
    sd.prompt, sd.num_steps, sd.num_samples = "a red cat", 2, 2
    return config


def test_inpainting_pipeline_concatenates_mask_and_masked_latents(folder, tmp_path):
    """SD's inpainting layout made from the unet fixture with zero weights on its 5 extra channels samples exactly
    what the text-to-image pipeline does (cfg on, same seed); with weights on them the samples change. The extra
    channels are [m_z, s E(x (1 - m))]: the mask binarised and taken at each latent pixel, the masked image's
    latent mean."""
    image, mask = inpaint_files(tmp_path / "files")
    zero = make_pipeline(tmp_path / "zero", unet=inpainting_unet(tmp_path / "unet0"))
    perturbed = make_pipeline(tmp_path / "perturbed", unet=inpainting_unet(tmp_path / "unet1", extra=0.3))
    plain = np.load(sample_pipeline(inpaint_config(folder), str(tmp_path / "w0"), "s"))["image"]
    ours = np.load(sample_pipeline(inpaint_config(zero, image, mask), str(tmp_path / "w1"), "s"))["image"]
    moved = np.load(sample_pipeline(inpaint_config(perturbed, image, mask), str(tmp_path / "w2"), "s"))["image"]
    assert ours.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(ours, plain)
    assert np.abs(moved.astype(int) - plain).max() > 2

    pipe = stable_diffusion.read_pipeline(zero)
    assert pipe.inpainting and pipe.vae_factor == 2
    pixels = np.asarray(Image.open(image))[None] / np.float32(255)
    m = np.asarray(Image.open(mask))[None, ..., None] / np.float32(255)
    given = np.asarray(masked_latents(pipe, pixels, m))
    expected_mask = np.zeros((1, 8, 8, 1), np.float32)
    expected_mask[:, 2:6, 0:4] = 1
    np.testing.assert_array_equal(given[..., :1], expected_mask)
    np.testing.assert_array_equal(latent_mask(np.full((1, 4, 4, 1), 0.4), 2), np.zeros((1, 2, 2, 1)))
    from models.autoencoder import AutoencoderKL
    mean, _ = pipe.vae.apply({"params": pipe.vae_params}, (2 * pixels - 1) * (1 - m), method=AutoencoderKL.encode)
    np.testing.assert_allclose(given[..., 1:], pipe.scaling_factor * np.asarray(mean), rtol=1e-6)


def test_inpainting_inputs_are_refused_in_one_line(folder, tmp_path):
    image, mask = inpaint_files(tmp_path / "a")
    inpainting = make_pipeline(tmp_path / "inpaint", unet=inpainting_unet(tmp_path / "unet"))
    _, nothing = inpaint_files(tmp_path / "b", (slice(0, 0), slice(0, 0)))
    _, everything = inpaint_files(tmp_path / "c", (slice(None), slice(None)))
    cases = [(inpaint_config(folder, image, mask), "the U-Net takes 4 input channels, not an inpainting U-Net's 9"),
             (inpaint_config(inpainting), "give config.sd.image and config.sd.mask_image"),
             (inpaint_config(inpainting, image, nothing), "marks no pixel to fill"),
             (inpaint_config(inpainting, image, everything), "marks every pixel to fill")]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            sample_pipeline(config, str(tmp_path / "w"), "s")
        assert "\n" not in str(err.value)
    pipe = stable_diffusion.read_pipeline(inpainting)
    with pytest.raises(ValueError, match=r"takes 9 input channels; it was given 4 \(4 latent \+ 0 concat\)"):
        jax.eval_shape(lambda: pipe.model.apply(pipe.variables, jnp.zeros((1, 8, 8, 4)), 0,
                                                context=jnp.zeros((1, 77, 32))))
    seven = make_pipeline(tmp_path / "seven", unet=inpainting_unet(tmp_path / "unet7", channels=7))
    message = "the U-Net takes 7 input channels.* need 4 in \\(9 for inpainting"
    with pytest.raises(ConversionError, match=message) as err:
        stable_diffusion.read_pipeline(seven)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"_class_name": "FlowMatchEulerDiscreteScheduler"}, "is not a discrete VP scheduler"),
    ({"beta_schedule": "sigmoid"}, "beta_schedule 'sigmoid' is not supported"),
    ({"prediction_type": "flow"}, "prediction_type 'flow' is not supported")])
def test_unsupported_schedulers_are_one_line(tmp_path, change, message):
    root = make_pipeline(tmp_path / "p", {**SCHEDULER, **change}, skip=("unet", "vae", "text_encoder"))
    with pytest.raises(ConversionError, match=message) as err:
        stable_diffusion.read_scheduler(os.path.join(root, "scheduler"))
    assert "\n" not in str(err.value)


def test_schedules_are_the_vp_chains_of_diffusers_betas(tmp_path):
    for schedule, betas in [("linear", np.linspace(1e-4, 0.02, 1000)),
                            ("scaled_linear", np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)]:
        root = make_pipeline(tmp_path / schedule, {**SCHEDULER, "beta_schedule": schedule, "beta_start": betas[0],
                                                   "beta_end": betas[-1]}, skip=("unet", "vae", "text_encoder"))
        sde = stable_diffusion.read_scheduler(os.path.join(root, "scheduler")).sde
        np.testing.assert_allclose(sde.discrete_betas, betas, rtol=1e-10)
    root = make_pipeline(tmp_path / "v", {**SCHEDULER, "prediction_type": "v_prediction"},
                         skip=("unet", "vae", "text_encoder"))
    assert stable_diffusion.read_scheduler(os.path.join(root, "scheduler")).prediction == "v"


def test_missing_component_is_one_line_through_the_command(tmp_path):
    root = make_pipeline(tmp_path / "p", skip=("vae",))
    result = subprocess.run([sys.executable, "main.py", "--config", "configs/sd/pipeline.py", "--mode", "sample",
                             "--workdir", str(tmp_path / "w"), f"--config.sd.path={root}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "has no vae/" in lines[0], result.stderr


def diffusers_timesteps(spacing: str, n: int, big_n: int = 1000, offset: int = 1) -> np.ndarray:
    """DDIMScheduler.set_timesteps' steps, written from its documented rules (the reference for chain_steps)."""
    if spacing == "leading":
        return (np.arange(0, n) * (big_n // n)).round()[::-1] + offset
    if spacing == "trailing":
        return np.round(np.arange(big_n, 0, -big_n / n)) - 1
    return np.linspace(0, big_n - 1, n).round()[::-1]


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [7, 50])
def test_timestep_spacings_and_targets_are_diffusers(spacing, n):
    sde = sde_lib.VPSDE(beta_min=0.085, beta_max=12.0, N=1000, discrete_labels="floor_index",
                        beta_schedule="scaled_linear")
    steps = chain_steps(sde, n, 1, spacing)
    np.testing.assert_array_equal(steps, diffusers_timesteps(spacing, n))
    # each step goes to i - N // n (diffusers' prev_timestep), the last below 0 to alpha_bar = 1 or chain step 0
    alpha_bar = np.asarray(sde.discrete_marginal_coeffs(jnp.arange(1000))[0], np.float64) ** 2
    for denoise, final in [(True, 1.0), (False, alpha_bar[0])]:
        times, _, (alpha_prev, _) = ddimchain_grid(sde, n, 1, spacing, denoise)
        prev = steps - 1000 // n
        expected = np.where(prev >= 0, alpha_bar[np.maximum(prev, 0)], final)
        np.testing.assert_allclose(np.asarray(alpha_prev) ** 2, expected, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(sde.timestep(times)), steps)


def test_an_unknown_timestep_spacing_is_one_line(tmp_path):
    root = make_pipeline(tmp_path / "p", {**SCHEDULER, "timestep_spacing": "random"},
                         skip=("unet", "vae", "text_encoder"))
    scheduler = stable_diffusion.read_scheduler(os.path.join(root, "scheduler"))
    with pytest.raises(ValueError, match="timestep spacing must be one of .* got 'random'"):
        get_sampler("ddim", scheduler.sde, (1, 4, 4, 4), num_steps=10, discrete=True, spacing=scheduler.spacing)
