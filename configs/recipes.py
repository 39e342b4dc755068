"""Published model recipes, each written once; experiment configs apply one and state what differs."""


def ddpm(config):
    """DDPM (Ho et al. 2020) as in score_sde's configs/vp/ddpm/*: VP SDE in discrete time, L_simple
    (reduce_mean), ancestral sampling, centred data, the 35.7M-parameter CIFAR-10 U-Net."""
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True
    config.sampling.method = "pc"
    config.sampling.predictor = "ancestral_sampling"
    config.sampling.corrector = "none"
    config.data.centered = True
    m = config.model
    m.name = "ddpm"
    m.scale_by_sigma = False
    m.ema_rate = 0.9999
    m.normalization = "GroupNorm"
    m.nonlinearity = "swish"
    m.nf = 128
    m.ch_mult = (1, 2, 2, 2)
    m.num_res_blocks = 2
    m.attn_resolutions = (16,)
    m.resamp_with_conv = True
    m.conditional = True
    m.norm_groups = "fixed_32"
    return config


def ncsnpp(config):
    """The NCSN++ family's shared settings (Song et al. 2021, score_sde configs/*/*ncsnpp*, *ddpmpp*):
    BigGAN residual blocks with skip rescaling, FIR (1,3,3,1) kernels, zero-initialised outputs.
    NCSN++ proper (VE) adds FIR resampling, a residual input pyramid and Fourier features of log sigma;
    DDPM++ (configs/vp/ddpmpp_*) turns those off and embeds time positionally."""
    config.sampling.method = "pc"
    m = config.model
    m.name = "ncsnpp"
    m.normalization = "GroupNorm"
    m.nonlinearity = "swish"
    m.nf = 128
    m.ch_mult = (1, 2, 2, 2)
    m.num_res_blocks = 4
    m.attn_resolutions = (16,)
    m.resamp_with_conv = True
    m.conditional = True
    m.fir = True
    m.fir_kernel = (1, 3, 3, 1)
    m.skip_rescale = True
    m.resblock_type = "biggan"
    m.progressive = "none"
    m.progressive_input = "residual"
    m.progressive_combine = "sum"
    m.attention_type = "ddpm"
    m.init_scale = 0.0
    m.embedding_type = "fourier"
    m.fourier_scale = 16
    return config
