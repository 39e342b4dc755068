"""Everything that integrates the reverse process. See samplers/registry.py for the contract."""
from samplers import pc  # noqa: F401  (registers "pc")
from samplers.registry import get_sampler, register_sampler


def from_config(config, sde, shape):
    """The sampler chosen by config.sampling, for samples of `shape`."""
    s = config.sampling
    if s.method == "pc":
        return get_sampler("pc", sde, shape, predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                           n_steps=s.n_steps_each, probability_flow=s.probability_flow, denoise=s.noise_removal,
                           num_steps=s.num_steps or None, eps=s.eps or None)
    return get_sampler(s.method, sde, shape)


__all__ = ["get_sampler", "register_sampler", "from_config"]
