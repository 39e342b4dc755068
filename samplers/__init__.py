"""Everything that integrates the reverse process. See samplers/registry.py for the contract.

Samplers: 'pc' (pc.py), 'ode' (ode.py), 'ddim' (ddim.py), 'dpm_solver' (dpm_solver.py),
'heun' (heun.py, EDM). Likelihood (bits/dim): samplers.likelihood. Controllable generation:
samplers.guidance (classifier-free and classifier guidance, as score_fn compositions, for every sampler)
and samplers.inverse (inpainting, colorization and other linear observations, as the 'pc' option `constraint`).
"""
from samplers import ddim, dpm_solver, heun, ode, pc  # noqa: F401  (each registers its sampler)
from samplers.registry import get_sampler, register_sampler

# config.sampling fields each method reads, as {sampler option: config field}.
_CONFIG_OPTIONS = {
    "pc": {"predictor": "predictor", "corrector": "corrector", "snr": "snr", "n_steps": "n_steps_each",
           "probability_flow": "probability_flow", "num_steps": "num_steps"},
    "ode": {"rtol": "rtol", "atol": "atol", "method": "ode_method"},
    "ddim": {"eta": "eta", "num_steps": "num_steps"},
    "dpm_solver": {"num_steps": "num_steps"},
    "heun": {"num_steps": "num_steps", "rho": "rho", "s_churn": "s_churn", "s_tmin": "s_tmin", "s_tmax": "s_tmax",
             "s_noise": "s_noise"},
}


def from_config(config, sde, shape, constraint=None):
    """The sampler named by config.sampling.method, for samples of `shape`, with its options from config.sampling.

    Every method also reads noise_removal (-> denoise) and eps; num_steps = 0 and eps = 0 mean the SDE's defaults.
    constraint (a samplers.inverse.LinearObservation) makes the 'pc' sampler solve that inverse problem.
    """
    s = config.sampling
    if s.method not in _CONFIG_OPTIONS:
        raise ValueError(f"Unknown config.sampling.method {s.method!r}; choose one of {sorted(_CONFIG_OPTIONS)}.")
    options = {option: s[field] for option, field in _CONFIG_OPTIONS[s.method].items()}
    if constraint is not None:
        if s.method != "pc":
            raise ValueError(f"Inpainting and colorization run on the PC sampler; set config.sampling.method='pc' "
                             f"(got {s.method!r}).")
        options["constraint"] = constraint
    return get_sampler(s.method, sde, shape, denoise=s.noise_removal, eps=s.eps, **options)


__all__ = ["get_sampler", "register_sampler", "from_config"]
