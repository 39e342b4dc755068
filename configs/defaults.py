"""Fields shared by every experiment; configs/default_<dataset>.py build on this.

Field names follow the original score_sde configs. Fields this project adds
(marked "new") sit beside them; none is renamed.
"""
import ml_collections


def get_base_config():
    config = ml_collections.ConfigDict()
    config.seed = 42
    # new: a score_sde_pytorch checkpoint (.pth) that --mode import converts into the workdir
    config.import_from = ""

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = False
    training.likelihood_weighting = False
    training.batch_size = 128
    training.n_iters = 1300001
    training.n_jitted_steps = 1
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq = 50000
    training.snapshot_freq_for_preemption = 10000
    training.snapshot_sampling = True
    training.snapshot_num_samples = 64  # new: images in each snapshot grid
    training.label_dropout = 0.0  # new: with model.num_classes > 0, rate of null labels (classifier-free guidance)
    training.keep_checkpoints = 0  # new: keep the newest N periodic checkpoints; 0 keeps all
    training.keep_checkpoint_every = 0  # new: with keep_checkpoints, also keep those at multiples of this step
    training.skip_nonfinite = False  # new: skip (and count) NaN/inf steps instead of stopping the run
    # new: what --mode train trains (tasks/): 'score' | 'classifier' | 'autoencoder' | 'controlnet' | 'clip'
    training.task = "score"
    # new: the score model's loss, "dsm" (denoising score matching, score_sde's; L_simple for DDPM) | "edm" | "vlb" (the
    # discrete VP chain's variational bound, bits/dim) | "hybrid" (L_simple + vlb_lambda L_vlb, Nichol & Dhariwal;
    # needs model.learned_variance); "vlb" and "hybrid" need training.continuous=False and a VP SDE
    training.loss = "dsm"
    training.vlb_sampling = "uniform"  # new: "vlb" loss's t, "uniform" | "importance" (p_t ~ sqrt(E[L_t^2]))
    training.vlb_lambda = 0.001  # new: "hybrid" loss's lambda
    # new: loss "edm": denoising score matching at EDM's noise levels, log(sigma / alpha) ~ N(p_mean, p_std^2), with
    # EDM's weights (continuous time; pair it with model.prediction="edm", the preconditioning)
    training.edm_p_mean = -1.2
    training.edm_p_std = 1.2

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.n_steps_each = 1
    sampling.snr = 0.16
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.num_steps = 0  # new: 0 means the SDE's N
    sampling.eps = 0.0  # new: smallest time; 0 means the SDE's sampling_eps
    # new: options of the other methods ('ode', 'ddim', 'dpm_solver', 'heun'; see samplers/)
    sampling.rtol = 1e-5  # 'ode': relative tolerance of the adaptive solve
    sampling.atol = 1e-5  # 'ode': absolute tolerance
    sampling.ode_method = "dopri5"  # 'ode': diffrax solver, 'dopri5' | 'tsit5' | 'bosh3'
    sampling.eta = 0.0  # 'ddim': 0 deterministic, 1 ancestral
    sampling.discrete = False  # 'ddim': step on the SDE's discrete chain (a discrete-time model; SD's DDIM)
    sampling.steps_offset = 0  # 'ddim' with discrete: added to every chain step (diffusers' steps_offset)
    sampling.spacing = "leading"  # discrete 'ddim': diffusers' timestep_spacing, 'leading' | 'trailing' | 'linspace'
    sampling.rho = 7.0  # 'heun': EDM time-step exponent
    sampling.s_churn = 0.0  # 'heun': EDM stochastic churn (0: deterministic)
    sampling.s_tmin = 0.0  # 'heun': churn only at EDM noise levels sigma/alpha in [s_tmin, s_tmax]
    sampling.s_tmax = float("inf")
    sampling.s_noise = 1.0  # 'heun': scale of the churn noise
    # new: controllable generation, read by --mode sample (training/sample.py)
    # 'generate' | 'inpaint' | 'colorize' | 'superres' (these three on method 'pc') | 'img2img' (SDEdit)
    sampling.task = "generate"
    sampling.factor = 4  # new: superres: the factor k whose k x k block means of the input are known
    sampling.strength = 0.5  # new: img2img: the input is noised to time strength T, then denoised by any sampler
    sampling.labels = ""  # classes: '' = every class (generate) / unconditional (inpaint, colorize); 'null'; '3,5'
    sampling.guidance = "none"  # 'none' | 'cfg' (classifier-free) | 'classifier' (noise-conditional classifier)
    # cfg: w of (1 + w) s(x|y) - w s(x) (0: conditional, -1: unconditional); classifier: the scale of grad log p(y|x)
    sampling.guidance_weight = 0.0
    sampling.classifier_dir = ""  # the noise-conditional classifier's folder; empty means <workdir>/noise_classifier
    sampling.num_samples = 8  # samples per class (generate) or per input image (inpaint, colorize)
    sampling.input = ""  # inpaint / colorize: an image file, resized to data.image_size ...
    sampling.input_indices = ""  # ... or comma-separated indices into the test split, e.g. '0,1,2'
    sampling.mask = "half"  # inpaint: 'half' (right half unknown) | 'center' | 'bottom' | an image file, white = known
    sampling.outpaint = ""  # new: inpaint outside the input, 'size,top,left': it, resized, on the image_size canvas
    sampling.checkpoint = 0  # step of the periodic checkpoint to sample; 0 = the newest
    sampling.condition = ""  # new: a ControlNet's condition image file (e.g. an edge map), or use input_indices
    # new: a text-conditioned model's prompts (modes/prompts.py), guided by 'cfg' against the negative prompt
    sampling.prompt = ""  # prompts separated by '|', e.g. "a 3 left of a 7|a 7 left of a 3"
    sampling.prompt_file = ""  # or a file of prompts, one a line
    sampling.negative_prompt = ""  # the unconditional branch of cfg ("" = the empty prompt)

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 1
    evaluate.batch_size = 256
    evaluate.enable_loss = True
    # new: which features sample quality is measured with (evaluation/features.py): the FID Inception-v3 from
    # this pytorch-fid weight file (pt_inception-2015-12-05-6726825d.pth) when set, else the domain classifier
    evaluate.inception_path = ""
    evaluate.classifier_dir = ""  # new: the domain classifier's folder; empty means <workdir>/classifier
    evaluate.stats_dir = ""  # new: folder of the datasets' reference statistics; empty means <workdir>/<eval_folder>
    evaluate.kid_subsets = 100  # new: KID is averaged over this many random subsets ...
    evaluate.kid_subset_size = 1000  # new: ... of this many examples (fewer when a set is smaller)
    evaluate.enable_sampling = False
    evaluate.num_samples = 10000
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"
    evaluate.hutchinson_type = "rademacher"  # new: bits/dim divergence, 'rademacher' | 'gaussian' | 'exact'
    evaluate.bpd_rtol = 1e-5  # new: tolerances of the likelihood's probability-flow ODE solve
    evaluate.bpd_atol = 1e-5
    evaluate.bpd_eps = 1e-5  # new: time the likelihood starts the ODE from
    evaluate.bpd_num_examples = 0  # new: bits/dim and bound bits/dim of only the first this many images; 0 = all
    # new: also report 'bound_bpd', the variational bound's bits/dim of 8-bit data over the test split (the
    # discrete chain's exact sum over t for training.continuous=False, VDM's continuous bound otherwise; VP only)
    evaluate.enable_bound = False

    # new: the domain classifier (evaluation/classifier.py; --mode train_classifier), whose features measure
    # sample quality where Inception weights are absent
    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.nf = 16  # channels of the first convs; the later ones have 2 nf and 4 nf
    classifier.n_iters = 1000
    classifier.batch_size = 64
    classifier.lr = 1e-3
    classifier.log_freq = 100  # steps between logged losses
    classifier.snapshot_freq_for_preemption = 200  # steps between pre-emption checkpoints (exact resume)
    # new: train p(y | x_t, t) on noised images for classifier guidance (config.sampling.guidance='classifier')
    classifier.noise_conditional = False

    # new: latent diffusion's first stage (tasks/autoencoder.py; config.training.task='autoencoder', trained on
    # config.data with config.training's schedule), defaults after LDM's / Stable Diffusion's
    config.autoencoder = autoencoder = ml_collections.ConfigDict()
    autoencoder.kind = "kl"  # 'kl' (AutoencoderKL) | 'vq' (VQModel)
    autoencoder.latent_channels = 4
    autoencoder.block_out_channels = (32, 64, 64)  # L levels: latents are image_size / 2^(L-1) on a side
    autoencoder.layers_per_block = 1
    autoencoder.norm_num_groups = 16  # must divide every entry of block_out_channels
    autoencoder.mid_block_attention = True
    autoencoder.num_vq_embeddings = 256  # 'vq': codebook size K
    autoencoder.vq_beta = 0.25  # 'vq': commitment weight
    autoencoder.vq_init = "uniform"  # 'vq' codebook start: 'uniform' U(-1/K, 1/K) (taming's) | 'data' (encoder outputs)
    autoencoder.kl_weight = 1e-6  # 'kl': weight of KL(q(z|x) || N(0, I))
    autoencoder.vq_weight = 1.0  # 'vq': weight of L_VQ (LDM's codebook_weight)
    autoencoder.perceptual = "none"  # 'none' | 'lpips' (the two files below) | 'classifier' (eval.classifier_dir)
    autoencoder.perceptual_weight = 1.0
    autoencoder.lpips_vgg_path = ""  # torchvision's vgg16 state dict (.pth)
    autoencoder.lpips_heads_path = ""  # the lpips package's weights/v0.1/vgg.pth
    autoencoder.disc_start = 50001  # step from which the GAN terms count
    autoencoder.disc_weight = 0.5  # scales the adaptive weight lambda
    autoencoder.disc_factor = 1.0  # the GAN terms' factor from disc_start on
    autoencoder.disc_ndf = 64  # PatchGAN channels of the first conv
    autoencoder.disc_layers = 3  # PatchGAN stride-2 layers (side / 2^disc_layers must be >= 3)
    autoencoder.disc_norm = "batch"  # 'batch' | 'none'
    autoencoder.lr = 4.5e-6  # Adam for both players (LDM: 4.5e-6 x batch size)
    autoencoder.beta1 = 0.5
    autoencoder.beta2 = 0.9
    autoencoder.scale_factor = 0.0  # latent scale s; 0: 1 / std of the latents, measured after training
    autoencoder.scale_examples = 2048  # training images the latent std is measured on

    # new: a score model in an autoencoder's latent space (tasks/latent.py)
    config.latent = latent = ml_collections.ConfigDict()
    latent.autoencoder_dir = ""  # the autoencoder run's workdir; empty: the score model works on pixels
    # new: text (tasks/text.py): the text tower of a CLIP pair (training.task='clip') or the prompt encoder of a
    # text-conditioned score model (conditional=True, model 'unet2d_condition', a captioned dataset)
    config.text = text = ml_collections.ConfigDict()
    text.conditional = False  # score model conditioned on captions; label_dropout is then the caption dropout
    text.tower = "transformer"  # 'transformer' (CLIP's) | 'bag_of_words' (the order-blind control)
    text.width = 64  # hidden size D of the context (B, L, D); = model.cross_attention_dim for a score model
    text.layers = 2
    text.heads = 4
    text.context_length = 8  # L: bos + words + eos (+ pads) of the word tokenizer
    text.tokenizer = ""  # "" = a word vocabulary built from the training captions, saved in the run; or a path
    text.pretrained_dir = ""  # score model: a CLIP run's workdir whose exported text tower is frozen; "" = joint
    text.projection_dim = 64  # CLIP: width of the shared embedding
    text.eval_examples = 1000  # CLIP: held-out examples the retrieval and order metrics are measured on

    # new: latent diffusion's 'concat' conditioning (tasks/concat.py): a condition image made from each example,
    # concatenated to the score network's input channels, dropped to the null (zero) image at rate dropout so
    # that config.sampling.guidance='cfg' applies to it
    config.concat = concat = ml_collections.ConfigDict()
    concat.kind = ""  # '' (off) | 'lowres' (super-resolution) | 'inpaint' (mask + masked image) | 'foreground'
    concat.factor = 4  # 'lowres': the downsampling factor k; must divide data.image_size
    concat.upsample = "nearest"  # 'lowres': how the k-times smaller image is brought back, 'nearest' | 'bilinear'
    concat.threshold = 0.5  # 'foreground': gray level above which a pixel is foreground
    concat.dropout = 0.1  # rate of null conditions in training (classifier-free guidance)
    concat.channels = 0  # the condition's channels C_c; 0: the kind's for config.data (a latent model's: its pixels')

    config.data = data = ml_collections.ConfigDict()
    data.dataset = ""
    data.image_size = 32
    data.num_channels = 3
    data.random_flip = False
    data.uniform_dequantization = False
    data.centered = False
    data.data_dir = ""  # new: where a dataset's files are, when it is not installed with a package
    data.category = ""  # LSUN category, e.g. "bedroom" (score_sde's name)
    data.tfrecords_path = ""  # CelebAHQ / FFHQ: progressive-GAN TFRecords file or glob (score_sde's name)
    data.tfds_data_dir = ""  # new: TFDS data dir of prepared datasets; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    data.path = ""  # new: dataset "folder" / "npz" / "idx" (or CelebAHQ / FFHQ images): training data path
    data.eval_path = ""  # new: the test split's path for those; "" = evaluate on the training data
    data.crop_size = 0  # new: centre crop to crop_size x crop_size before resizing; 0 = dataset default (CELEBA 140)

    config.model = model = ml_collections.ConfigDict()
    model.name = "ddpm"
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    # new: VP / sub-VP beta(t), "linear" | "scaled_linear" (linear in sqrt(beta); Stable Diffusion's with
    # beta_min = 0.85, beta_max = 12) | "cosine" (Nichol & Dhariwal 2021; ignores beta_min / beta_max)
    model.beta_schedule = "linear"
    model.dropout = 0.1
    model.ema_rate = 0.9999
    # new: warm the EMA up, r_t = min(ema_rate, (1 + t) / (10 + t)) (training/state.py), so short runs forget
    # their random initialisation; score_sde's EMA has no warm-up
    model.ema_warmup = False
    # new: 'ddpm' only: the U-Net works on p x p patches of the image, folded into channels (B, H/p, W/p, C p^2) by
    # its first conv and unfolded after its last, so attn_resolutions name resolutions of H/p (sde_lib.fold_patches)
    model.patch_size = 1
    model.scale_by_sigma = False
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.num_classes = 0  # new: > 0 adds a class embedding; label num_classes is the null label (CFG)
    model.dtype = "float32"  # new: compute dtype, "float32" or "bfloat16"; parameters stay float32
    # new: GroupNorm groups of C channels, "quarter_channels" = min(C // 4, 32) (score_sde's NCSN++ / DDPM++)
    # or "fixed_32" (score_sde's DDPM; recipes.ddpm sets it). Before this option every network here used
    # "quarter_channels": set it to run models trained here with a DDPM config before then.
    model.norm_groups = "quarter_channels"
    # new: the time label of a discrete-time (training.continuous=False) network, "score_sde" (score_sde's:
    # t (N-1) for VP, round((1 - t)(N-1)), an index into the descending sigmas, for VE) or "floor_index"
    # (floor(t (N-1)), the chain step counted from the data, for both: this framework's before the option)
    model.discrete_labels = "score_sde"
    # new: what the network predicts, "default" (the SDE's, as score_sde: "epsilon" for VP / sub-VP, "score"
    # for VE) | "epsilon" | "x0" | "v" (alpha eps - sigma x_0; SD 2.x 768) | "score" | "edm" (EDM's
    # preconditioning c_skip, c_out, c_in with sigma_data; models/score_fn.py)
    model.prediction = "default"
    model.sigma_data = 0.5  # new: EDM's sigma_d, the data's standard deviation, for prediction "edm"
    # new: the network also outputs Nichol & Dhariwal's v (2C channels: eps, then v), the reverse step's
    # log Sigma = v log beta_t + (1 - v) log beta~_t, trained by the "vlb" / "hybrid" loss, used by the ancestral
    # and DDIM samplers (ddpm and ncsnpp networks)
    model.learned_variance = False

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.beta2 = 0.999  # new: Adam's second-moment decay (score_sde fixes it at 0.999)
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000
    optim.grad_clip = 1.0

    # new: a ControlNet on a trained 'unet2d_condition', 'ddpm' or 'ncsnpp' score model (training.task='controlnet',
    # tasks/controlnet.py); config.model / config.data / config.optim must be the base run's
    config.controlnet = controlnet = ml_collections.ConfigDict()
    controlnet.base_workdir = ""  # the base score model's --workdir; its newest checkpoint's EMA params, frozen
    controlnet.condition = "canny"  # 'canny' | 'scribble' (dilated edges) | 'mask' (foreground) | 'folder'
    controlnet.condition_dir = ""  # 'folder': condition images named as the data's files (data.dataset='folder')
    controlnet.canny_sigma = 0.5  # Gaussian smoothing of Canny edges (also of the edge-F1 metric)
    controlnet.scribble_radius = 1  # 'scribble': pixels the edges are thickened by
    controlnet.mask_threshold = 0.5  # 'mask': gray level above which a pixel is foreground
    controlnet.embedding_channels = (16,)  # hint encoder widths; one stride-2 conv between consecutive ones
    controlnet.conditioning_scale = "1"  # sampling: one number or one per output (down residuals, then mid)
    return config
