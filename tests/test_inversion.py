import numpy as np
import torch

from magedit.inversion import DDIMSchedule, Inversion, InversionCache


def test_schedule_timesteps_and_alphas():
    schedule = DDIMSchedule(50)
    assert schedule.timesteps == list(range(981, 0, -20))
    assert schedule.step_ratio == 20
    # set_alpha_to_one=False: below the first timestep the step uses alpha_0.
    assert schedule.alpha(-19) == schedule.alphas_cumprod[0]
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    expected = torch.cumprod(1 - betas, 0)
    assert torch.allclose(schedule.alphas_cumprod, expected)
    assert DDIMSchedule(10).timesteps[:2] == [901, 801]


def test_inversion_step_undoes_the_denoising_step():
    schedule = DDIMSchedule(50)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    eps = torch.randn(1, 4, 8, 8, generator=g)
    for t in (981, 501, 21):
        assert torch.allclose(schedule.next(eps, t, schedule.prev(eps, t, x)), x, atol=1e-5)


def _inversion(key):
    return Inversion(
        original=np.zeros((1, 1, 3), np.uint8),
        image=np.zeros((1, 1, 3), np.uint8),
        source_prompt="a",
        method="ddim",
        steps=1,
        guidance_scale=7.5,
        trajectory=torch.zeros(2, 1, 4, 1, 1),
        uncond=torch.zeros(1, 77, 8),
        key=key,
    )


def test_cache_is_a_bounded_lru():
    cache = InversionCache(maxsize=2)
    cache.put(_inversion("a"))
    cache.put(_inversion("b"))
    assert cache.get("a").key == "a"  # a is now the most recent
    cache.put(_inversion("c"))  # evicts b
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2 and (cache.hits, cache.misses) == (3, 1)
