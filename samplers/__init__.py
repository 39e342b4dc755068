"""Everything that integrates the reverse process. See samplers/registry.py for the contract.

Samplers: 'pc' (pc.py), 'ode' (ode.py), 'ddim' (ddim.py), 'dpm_solver' (dpm_solver.py),
'heun' (heun.py, EDM). Likelihood (bits/dim): samplers.likelihood. Controllable generation:
samplers.guidance (classifier-free and classifier guidance, as score_fn compositions, for every sampler)
and samplers.inverse (inpainting, colorization and other linear observations, as the 'pc' option `constraint`).
"""
from configs import ConfigError
from samplers import ddim, dpm_solver, heun, ode, pc  # noqa: F401  (each registers its sampler)
from samplers.registry import get_sampler, register_sampler, sampler_options, takes_variance

# The options whose config.sampling field has another name (score_sde's); every other option is read from the
# field of its own name.
_FIELD_OF_OPTION = {"n_steps": "n_steps_each", "method": "ode_method", "denoise": "noise_removal"}


def from_config(config, sde, shape, constraint=None):
    """The sampler named by config.sampling.method, for samples of `shape`, each of its options read from
    config.sampling (num_steps = 0 and eps = 0 mean the SDE's defaults). constraint (a
    samplers.inverse.LinearObservation) makes the 'pc' sampler solve that inverse problem."""
    s = config.sampling
    try:
        names = sampler_options(s.method)
    except ValueError as e:
        raise ValueError(f"config.sampling.method: {e}") from None
    options = {option: s[_FIELD_OF_OPTION.get(option, option)] for option in names if option != "constraint"}
    if constraint is not None:
        if s.method != "pc":
            raise ConfigError(f"Inpainting, colorization and super-resolution run on the PC sampler (each inverse task runs on the PC "
                              f"sampler's steps); set config.sampling.method='pc' (got {s.method!r}).")
        options["constraint"] = constraint
    return get_sampler(s.method, sde, shape, **options)


__all__ = ["get_sampler", "register_sampler", "from_config", "takes_variance"]
