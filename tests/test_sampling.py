"""Samplers over a denoiser: they land on an oracle's target, match diffusers' own step loops, and guide correctly."""
from __future__ import annotations

import pytest
import torch

from pipelines.errors import LandmarkTalkError
from pipelines.sampling import SAMPLERS, Denoiser, guided_denoiser, make_scheduler, sample_latents


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread avoids contention stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_oracle_denoiser_lands_every_sampler_on_the_target(sampler, steps):
    target = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    seen = []

    def oracle(x, sigma):
        seen.append(float(sigma[0]))
        return target

    out = sample_latents(oracle, noise, make_scheduler(sampler), steps)
    torch.testing.assert_close(out, target, atol=1e-5, rtol=1e-5)
    assert len(seen) == steps and seen == sorted(seen, reverse=True) and seen[0] > 10  # from (near) pure noise


def _alphas(scheduler):
    return scheduler.alphas_cumprod.double()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoiser_turns_an_exact_eps_or_v_model_into_x0(prediction_type):
    """A model that outputs the true ε (or v) of x_t at integer timesteps recovers x0 through the wrapper."""
    scheduler = make_scheduler("ddpm", prediction_type=prediction_type)
    alphas = _alphas(scheduler)
    x0 = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(x0)
    timesteps = torch.tensor([0, 10, 250, 700, 999])
    a = alphas[timesteps].view(-1, 1, 1, 1)
    sigma = ((1 - a) / a).sqrt()

    def model(x_t, t):
        assert torch.allclose(t, timesteps.float(), atol=1e-3)  # σ of a training step maps back to its step
        assert torch.allclose(x_t.double(), a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-4)
        return eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0

    out = Denoiser(model, scheduler)((x0 + sigma * eps).float(), sigma.flatten().float())
    torch.testing.assert_close(out.double(), x0, atol=2e-4, rtol=1e-4)


def _eps_model(x_t, t):
    # Any smooth deterministic ε-model will do to compare update rules.
    return 0.6 * torch.tanh(x_t) + 0.05 * torch.cos(t.view(-1, 1, 1, 1) / 97.0) * x_t.mean()


@pytest.mark.parametrize("sampler, steps", [("ddim", 6), ("dpmpp_2m", 6), ("dpmpp_2m", 20), ("euler", 6)])
def test_samplers_match_diffusers_step_loops(sampler, steps):
    """Our x0-space updates reproduce diffusers' own DDIM / DPM-Solver++(2M) / Euler ``step`` on the same model."""
    noise = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()

    def scheduler():
        made = make_scheduler(sampler)
        if sampler == "ddim":
            # diffusers' DDIM steps to t - 1000 // steps, which lands on its next timestep only with "leading"
            # spacing (with "trailing" it ends at t = 0 instead of ᾱ = 1); compare the update rule there.
            made = type(made).from_config(made.config, timestep_spacing="leading")
        return made

    ours = sample_latents(Denoiser(_eps_model, scheduler()), noise, scheduler(), steps)

    reference = scheduler()
    reference.set_timesteps(steps)
    timesteps = reference.timesteps
    alphas = _alphas(reference)
    sigma0 = float(((1 - alphas[int(timesteps[0])]) / alphas[int(timesteps[0])]).sqrt())
    if sampler == "euler":  # its state is x0 + σ·ε, like ours
        x = noise * sigma0
        for t in timesteps:
            x = reference.step(_eps_model(reference.scale_model_input(x, t), t.float().expand(2)), t, x).prev_sample
    else:  # DDIM and DPM-Solver step the variance-preserving x_t = x / sqrt(1 + σ²)
        x = noise * sigma0 / (1 + sigma0**2) ** 0.5
        for t in timesteps:
            x = reference.step(_eps_model(x, t.float().expand(2)), t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=2e-4, rtol=2e-4)


def test_guidance_scale_one_is_the_plain_conditional_call_and_other_scales_extrapolate():
    x = torch.randn(4, 3, 5, 5)
    sigma = torch.full((4,), 2.0)
    calls = []

    def denoise(x, sigma, drop):
        calls.append(drop.clone())
        cond = torch.where(drop.view(-1, 1, 1, 1), torch.zeros_like(x), torch.ones_like(x))
        return 0.5 * x + cond

    plain = denoise(x, sigma, torch.zeros(4, dtype=torch.bool))
    calls.clear()
    torch.testing.assert_close(guided_denoiser(denoise, 1.0)(x, sigma), plain)
    assert len(calls) == 1 and not calls[0].any()
    calls.clear()
    guided = guided_denoiser(denoise, 3.0)(x, sigma)
    assert len(calls) == 1 and calls[0].tolist() == [False] * 4 + [True] * 4  # one doubled batch
    torch.testing.assert_close(guided, 0.5 * x + 3.0)  # uncond + 3·(cond − uncond)


def test_callback_reports_every_step_and_can_cancel():
    target = torch.zeros(1, 1, 2, 2)
    reports = []
    sample_latents(lambda x, s: target, torch.randn(1, 1, 2, 2), make_scheduler("dpmpp_2m"), 5,
                   callback=lambda step, total, x0: reports.append((step, total, x0.shape)))
    assert reports == [(i, 5, (1, 1, 2, 2)) for i in range(1, 6)]

    class Cancelled(Exception):
        pass

    def cancel(step, total, x0):
        if step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        sample_latents(lambda x, s: target, torch.randn(1, 1, 2, 2), make_scheduler("ddim"), 5, callback=cancel)


def test_bad_names_are_refused_with_the_choices():
    with pytest.raises(LandmarkTalkError, match="dpmpp_2m"):
        make_scheduler("heun")
    with pytest.raises(LandmarkTalkError, match="v_prediction"):
        make_scheduler("ddim", prediction_type="x")
    with pytest.raises(LandmarkTalkError, match="make_scheduler"):
        sample_latents(lambda x, s: x, torch.zeros(1, 1, 2, 2), make_scheduler("ddpm"), 3)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_partial_denoise_starts_from_the_init_at_a_lower_noise_level(sampler):
    """SDEdit: ``denoise_strength`` s < 1 runs the last ``steps`` of a ``steps / s`` grid from init + σ·noise."""
    scheduler = make_scheduler(sampler)
    init = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    steps = 5

    def sigmas_seen(strength):
        seen, first = [], []

        def record(x, sigma):
            if not first:
                first.append(x.clone())
            seen.append(float(sigma[0]))
            return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)  # the exact denoiser of N(0, I) data
        out = sample_latents(record, noise, scheduler, steps, init=init, denoise_strength=strength)
        return out, seen, first[0]

    full, full_sigmas, full_start = sigmas_seen(1.0)
    torch.testing.assert_close(full_start, noise * full_sigmas[0])  # 1 = pure noise, init ignored
    half, half_sigmas, half_start = sigmas_seen(0.5)
    assert len(half_sigmas) == steps and half_sigmas == sorted(half_sigmas, reverse=True)
    assert half_sigmas[0] < full_sigmas[0] / 5  # starts well below pure noise …
    torch.testing.assert_close(half_start, init + noise * half_sigmas[0])  # … from the noised init
    # A small strength keeps the init's layout; the full one forgets it.
    low, _, _ = sigmas_seen(0.1)
    assert torch.corrcoef(torch.stack([low.flatten(), init.flatten()]))[0, 1] > 0.9
    assert abs(float(torch.corrcoef(torch.stack([full.flatten(), init.flatten()]))[0, 1])) < 0.2


def test_partial_denoise_needs_an_init_and_a_strength_in_range():
    noise = torch.zeros(1, 1, 2, 2)
    with pytest.raises(LandmarkTalkError, match="needs an init"):
        sample_latents(lambda x, s: x, noise, make_scheduler("ddim"), 3, denoise_strength=0.5)
    for bad in (0.0, 1.5):
        with pytest.raises(LandmarkTalkError, match=r"strength in \(0, 1\]"):
            sample_latents(lambda x, s: x, noise, make_scheduler("ddim"), 3, init=noise, denoise_strength=bad)
