"""Sampling a published Stable Diffusion (/ ControlNet) pipeline folder with --mode sample (modes/sd_sample.py):

    python main.py --config configs/sd/pipeline.py --mode sample --workdir W \
        --config.sd.path=stable-diffusion-v1-5 --config.sd.prompt="a photo of a cat"

The folder is what diffusers' StableDiffusionPipeline.save_pretrained writes (model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/), safetensors weights; nothing is downloaded.
"""
import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.sd = sd = ml_collections.ConfigDict()
    sd.path = ""  # the pipeline folder
    sd.controlnet = ""  # a diffusers ControlNetModel folder ("" = the pipeline's controlnet/ if it has one, else none)
    sd.control_image = ""  # the ControlNet's condition image (e.g. Canny edges), resized to the latent size x 8
    sd.conditioning_scale = 1.0  # ControlNet residual scale
    sd.image = ""  # an inpainting U-Net's image to complete (resized to the latent size x 8)
    sd.mask_image = ""  # ... and its mask: white = the region to fill, black = keep (diffusers' convention)
    sd.prompt = ""
    sd.negative_prompt = ""  # the unconditional branch of classifier-free guidance ("" as in diffusers)
    sd.guidance_scale = 7.5  # diffusers' g: eps_neg + g (eps - eps_neg); 1 = no guidance
    sd.num_steps = 50  # DDIM steps on the scheduler's chain
    sd.eta = 0.0  # DDIM: 0 deterministic, 1 ancestral
    sd.num_samples = 1
    sd.dtype = "float32"  # the U-Net's and ControlNet's activations: 'float32' or 'bfloat16' (a GPU / TPU)
    sd.image_size = 0  # pixels a side; 0 = the U-Net's sample_size times the VAE's factor (512 for SD 1.5)
    return config
