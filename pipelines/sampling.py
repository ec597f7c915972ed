"""Diffusion samplers as plain functions over a denoiser ``denoise(x, sigma) -> x0`` (k-diffusion style).

The sampling state is ``x = x0 + sigma * noise`` ("variance exploding" coordinates). A model trained the
DDPM way (ε- or v-prediction on ``x_t = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε``) becomes such a denoiser through
:class:`Denoiser`, which holds the preconditioning: ``x_t = x / sqrt(1 + σ²)``, ``t`` = the training
timestep whose σ matches (log-σ interpolation), and the conversion of ε/v back to ``x0``. Noise levels
come from diffusers schedulers (:func:`make_scheduler`, ``set_timesteps``): the beta schedule and the
timestep spacing are theirs, only the update rule lives here:

- ``"ddim"``: deterministic DDIM (η = 0), which in these coordinates is an Euler step of the
  probability-flow ODE (Song et al. 2021, §4.3; Karras et al. 2022, Table 1);
- ``"euler"``: the same update on the Euler scheduler's σ grid;
- ``"dpmpp_2m"``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), the second-order multistep data-prediction
  solver, on the DPM-Solver scheduler's grid.

Classifier-free guidance (Ho & Salimans 2022) is a wrapper, :func:`guided_denoiser`, around a denoiser
that takes a per-sample "drop the condition" mask, so conditional and unconditional passes run as one
batch. ``callback(step, total, x0)`` reports progress; raise from it to cancel.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable

import torch

from .errors import LandmarkTalkError

__all__ = ["make_scheduler", "Denoiser", "guided_denoiser", "sample_latents", "SAMPLERS"]

logger = logging.getLogger(__name__)

SAMPLERS = ("ddim", "euler", "dpmpp_2m")

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor], None]


def make_scheduler(
    name: str,
    *,
    num_train_timesteps: int = 1000,
    beta_schedule: str = "scaled_linear",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    prediction_type: str = "epsilon",
):
    """A diffusers scheduler: ``"ddpm"`` for training (``add_noise``/``get_velocity``) or one of :data:`SAMPLERS`.

    All share the same beta schedule (Stable Diffusion's ``scaled_linear`` 0.00085–0.012 by default), so a
    model trained with the ``"ddpm"`` one samples with any of the others.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise LandmarkTalkError(
            f"prediction_type {prediction_type!r}: use 'epsilon', 'v_prediction' or 'sample'"
        )
    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, beta_start=beta_start,
                  beta_end=beta_end, prediction_type=prediction_type)
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    if name == "ddim":
        # "trailing" spacing starts at the last training step, which few-step sampling needs (Lin et al. 2024).
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    if name == "euler":
        return EulerDiscreteScheduler(**common, timestep_spacing="trailing")
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise LandmarkTalkError(f"sampler {name!r}: choose one of {', '.join(SAMPLERS)} (or 'ddpm' for training)")


def _training_sigmas(scheduler) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.double()
    return ((1 - alphas) / alphas).sqrt()


def _sampling_sigmas(scheduler, steps: int) -> torch.Tensor:
    """The scheduler's σ grid for ``steps`` steps, descending, ending at 0 (float64 on CPU)."""
    if steps < 1:
        raise LandmarkTalkError(f"steps {steps}: give at least 1 sampling step")
    scheduler.set_timesteps(steps)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) == steps + 1:
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
    else:  # DDIM keeps only timesteps: σ(t) from ᾱ_t, and its final step goes to ᾱ = 1 (σ = 0).
        table = _training_sigmas(scheduler)
        t = scheduler.timesteps.to(torch.float64).cpu()
        sigmas = torch.cat([_interp(t, torch.arange(len(table), dtype=torch.float64), table), torch.zeros(1,
                           dtype=torch.float64)])
    sigmas[-1] = 0.0
    return sigmas


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for increasing ``xp`` (clamped at the ends)."""
    x = x.clamp(xp[0], xp[-1])
    index = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    lo, hi = xp[index - 1], xp[index]
    w = (x - lo) / (hi - lo)
    return fp[index - 1] + w * (fp[index] - fp[index - 1])


class Denoiser:
    """Turns an ε/v/x0-predicting ``model_fn(x_t, timesteps, **cond)`` into ``denoise(x, sigma, **cond) -> x0``.

    ``scheduler`` is any diffusers scheduler with ``alphas_cumprod`` (the training one is best); its
    ``prediction_type`` is used unless ``prediction_type`` is given. ``autocast_dtype`` (e.g.
    ``torch.bfloat16`` on CUDA) runs the model under ``torch.autocast``; the returned ``x0`` is always
    float32, so the sampler's state never loses precision.
    """

    def __init__(self, model_fn: Callable[..., torch.Tensor], scheduler, *, prediction_type: str | None = None,
                 autocast_dtype: torch.dtype | None = None):
        self.model_fn = model_fn
        self.prediction_type = prediction_type or scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise LandmarkTalkError(
                f"prediction_type {self.prediction_type!r}: use 'epsilon', 'v_prediction' or 'sample'"
            )
        self.log_sigmas = _training_sigmas(scheduler).log()
        self.autocast_dtype = autocast_dtype

    def sigma_to_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) training timestep whose noise level is ``sigma``."""
        # On the CPU in float64 (a few values per step; MPS has no float64).
        log_sigma = sigma.detach().to("cpu", torch.float64).clamp_min(1e-12).log()
        t = _interp(log_sigma, self.log_sigmas, torch.arange(len(self.log_sigmas), dtype=torch.float64))
        return t.to(device=sigma.device, dtype=torch.float32)

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None or self.autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **conditions) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        s = sigma.view(-1, *([1] * (x.ndim - 1)))
        c_in = 1.0 / torch.sqrt(s * s + 1.0)  # x_t = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε = x / sqrt(1 + σ²)
        with self._autocast(x.device):
            out = self.model_fn(x * c_in, self.sigma_to_timestep(sigma), **conditions)
        out = out.float()
        if self.prediction_type == "epsilon":
            return x - s * out
        if self.prediction_type == "v_prediction":  # v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x0
            return x * c_in * c_in - s * c_in * out
        return out


def guided_denoiser(denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                    scale: float) -> DenoiseFn:
    """Classifier-free guidance: ``x0 = uncond + scale * (cond - uncond)``.

    ``denoise(x, sigma, drop)`` takes a bool mask ``drop`` [B] (True = condition dropped); the conditional
    and unconditional halves run as one doubled batch. ``scale == 1`` is the plain conditional call.
    """
    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(b)
        if scale == 1.0:
            return denoise(x, sigma, torch.zeros(b, dtype=torch.bool, device=x.device))
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x.device)
        cond, uncond = denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), drop).chunk(2)
        return uncond + scale * (cond - uncond)

    return guided


def _step_euler(x, x0, sigma, sigma_next, state):
    # dx/dσ = (x - x0) / σ; one step to σ_next. At σ_next = 0 this returns x0 exactly.
    return x0 + (sigma_next / sigma) * (x - x0)


def _step_dpmpp_2m(x, x0, sigma, sigma_next, state):
    if sigma_next == 0:
        return x0
    t, t_next = -math.log(sigma), -math.log(sigma_next)
    h = t_next - t
    previous = state.get("previous")
    if previous is None:
        data = x0
    else:  # second-order correction from the previous data prediction (Lu et al. 2022, eq. 16)
        previous_x0, previous_t = previous
        r = (t - previous_t) / h
        data = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
    state["previous"] = (x0, t)
    return (sigma_next / sigma) * x - math.expm1(-h) * data


_UPDATES = {"DDIMScheduler": _step_euler, "EulerDiscreteScheduler": _step_euler,
            "DPMSolverMultistepScheduler": _step_dpmpp_2m}


@torch.no_grad()
def sample_latents(
    denoise: DenoiseFn,
    noise: torch.Tensor,
    scheduler,
    steps: int,
    *,
    callback: Callback | None = None,
    init: torch.Tensor | None = None,
    denoise_strength: float = 1.0,
) -> torch.Tensor:
    """Integrate from pure noise to a sample with ``scheduler``'s σ grid and its update rule.

    ``noise`` is standard normal (its device sets where sampling runs); ``scheduler`` comes from
    :func:`make_scheduler` (its class picks DDIM/Euler/DPM-Solver++(2M)). Returns float32 ``x0``.
    ``callback(step, steps, x0)`` runs after each step with the current clean estimate.

    ``denoise_strength`` < 1 with an ``init`` sample (SDEdit, Meng et al. 2022; ComfyUI's KSampler "denoise"):
    the grid of ``round(steps / denoise_strength)`` steps is cut to its last ``steps``, and sampling starts from
    ``init + σ_start · noise``, so the sample keeps ``init``'s coarse layout where the model has no reason
    to change it. ``denoise_strength`` = 1 ignores ``init``.
    """
    update = _UPDATES.get(type(scheduler).__name__)
    if update is None:
        raise LandmarkTalkError(
            f"scheduler {type(scheduler).__name__}: sample with one from make_scheduler({'/'.join(SAMPLERS)})"
        )
    if not 0.0 < denoise_strength <= 1.0:
        raise LandmarkTalkError(f"denoise {denoise_strength}: give a strength in (0, 1] (1 = start from pure noise)")
    if denoise_strength < 1.0:
        if init is None:
            raise LandmarkTalkError(f"denoise {denoise_strength} < 1 needs an init sample to start from")
        sigmas = _sampling_sigmas(scheduler, max(steps, int(round(steps / denoise_strength)))).tolist()[-(steps + 1):]
        x = init.to(noise.device, torch.float32) + noise.float() * sigmas[0]
    else:
        sigmas = _sampling_sigmas(scheduler, steps).tolist()
        x = noise.float() * sigmas[0]
    state: dict = {}
    for i in range(len(sigmas) - 1):
        sigma = torch.full((x.shape[0],), sigmas[i], dtype=torch.float32, device=x.device)
        x0 = denoise(x, sigma)
        x = update(x, x0, sigmas[i], sigmas[i + 1], state)
        if callback is not None:
            callback(i + 1, len(sigmas) - 1, x0)
    return x
