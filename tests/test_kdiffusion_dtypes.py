"""The k-diffusion drop-in's global-generator draws when latents and schedule differ in dtype.

k-diffusion's churn samplers (``sample_euler`` / ``_heun`` / ``_dpm_2``) draw ``torch.randn_like(x)`` on their
running x, which ``to_d`` (a division by σ with x's dimensions appended) promotes with the schedule from the second
step on: float32 latents on a float64 schedule draw float64 from step 2, other numbers that also advance the
generator differently (for 16 or more elements). The ancestral and DPM-Solver samplers draw on the input x
(``default_noise_sampler(x)``), the SDE samplers one ``randint`` for their tree's seed. After ``torch.manual_seed``
the drop-in must make the same draws, in the same dtypes, give k-diffusion's result and leave the generator where
k-diffusion leaves it (docs/kdiffusion.md).
"""
from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from samplers.interop import kdiffusion as ours
from samplers.problems import GaussianMixture
from benchmarks.peers import KDiffusionUnavailable, kdiffusion_modules

try:
    kd = kdiffusion_modules()[0]
except KDiffusionUnavailable:
    kd = None
pytestmark = pytest.mark.skipif(kd is None, reason="k-diffusion is not installed: pip install --no-deps "
                                                    "k-diffusion==0.1.1.post1 (make test does)")

GM = GaussianMixture.default(shape=(2, 4, 4), components=3, seed=6)  # 32 elements: torch's vectorised randn path


def model(x, sigma):
    """A k-diffusion model wrapper returning its input's dtype (as k-diffusion's wrappers do)."""
    return GM.denoiser(x.double(), sigma.double()).to(x.dtype)


F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
DTYPES = [F16, BF16, F32, F64]

CHURN = [("sample_euler", {}), ("sample_euler", {"s_churn": 1.0}),
         ("sample_euler", {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 5.0}),  # draws discarded between used ones
         ("sample_heun", {}), ("sample_heun", {"s_churn": 1.0}),
         ("sample_dpm_2", {}), ("sample_dpm_2", {"s_churn": 1.0})]
ANCESTRAL = [("sample_euler_ancestral", {}), ("sample_euler_ancestral", {"eta": 0.0}),
             ("sample_dpm_2_ancestral", {}), ("sample_dpmpp_2s_ancestral", {"eta": 0.7})]
SDE = [("sample_dpmpp_sde", {}), ("sample_dpmpp_2m_sde", {}), ("sample_dpmpp_3m_sde", {})]
SCHEDULE_CASES = CHURN + ANCESTRAL


class _Draws:
    """Records the dtype of every ``torch.randn_like`` draw (k-diffusion's and the drop-in's alike)."""

    def __init__(self, monkeypatch):
        self.dtypes = []
        real = torch.randn_like

        def randn_like(*args, **kwargs):
            out = real(*args, **kwargs)
            self.dtypes.append(out.dtype)
            return out
        monkeypatch.setattr(torch, "randn_like", randn_like)

    def take(self) -> list:
        taken, self.dtypes = self.dtypes, []
        return taken


def run(module, name, *args, **options):
    """(result, the generator's next draw) of one run after ``torch.manual_seed(0)``."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde's range warnings, the same on both sides
        out = getattr(module, name)(model, *args, disable=True, **options)
    return out, torch.randn(3)


def both(monkeypatch, name, *args, **options):
    draws = _Draws(monkeypatch)
    out, after = run(ours, name, *args, **options)
    mine = draws.take()
    k_out, k_after = run(kd, name, *args, **options)
    return (out, after, mine), (k_out, k_after, draws.take())


def schedule_run(monkeypatch, name, options, x_dtype, sigma_dtype):
    sigmas = kd.get_sigmas_karras(6, 0.03, 14.6).double().to(sigma_dtype)
    x = (GM.noise(2, seed=3).double() * float(sigmas[0])).to(x_dtype)
    return both(monkeypatch, name, x, sigmas, **options)


def assert_same_draws(got, want):
    (_, after, mine), (_, k_after, theirs) = got, want
    assert mine == theirs, "the drop-in drew in other dtypes than k-diffusion"
    assert torch.equal(after, k_after), "the global generator is left elsewhere than k-diffusion leaves it"


@pytest.mark.parametrize("name,options", SCHEDULE_CASES, ids=[f"{n}-{o}" for n, o in SCHEDULE_CASES])
@pytest.mark.parametrize("x_dtype,sigma_dtype", [(F32, F64), (F64, F32), (F32, F32), (F64, F64)],
                         ids=["x32-s64", "x64-s32", "x32-s32", "x64-s64"])
def test_result_and_generator_match_k_diffusion(monkeypatch, name, options, x_dtype, sigma_dtype):
    got, want = schedule_run(monkeypatch, name, options, x_dtype, sigma_dtype)
    assert_same_draws(got, want)
    out, k_out = got[0], want[0]
    assert out.dtype == x_dtype  # the drop-in keeps the latents' dtype (k-diffusion: the promoted one)
    tol = 1e-12 if F32 not in (x_dtype, sigma_dtype) else 2e-6  # float32 rounding of the state or k-diffusion's σ
    scale = float(k_out.abs().max())
    torch.testing.assert_close(out.double(), k_out.double(), rtol=0, atol=tol * scale)


@pytest.mark.parametrize("name,options", SCHEDULE_CASES + SDE, ids=[f"{n}-{o}" for n, o in SCHEDULE_CASES + SDE])
def test_draws_in_k_diffusions_dtypes_for_every_pair_of_dtypes(monkeypatch, name, options):
    # half-precision latents or schedules too: k-diffusion's σ arithmetic then rounds (its result is not compared
    # here); what it draws, and where it leaves the generator, are the drop-in's to match exactly
    for x_dtype, sigma_dtype in itertools.product(DTYPES, DTYPES):
        got, want = schedule_run(monkeypatch, name, options, x_dtype, sigma_dtype)
        assert_same_draws(got, want)


def test_float32_latents_on_a_float64_schedule_draw_float64_after_the_first_step(monkeypatch):
    got, want = schedule_run(monkeypatch, "sample_euler", {"s_churn": 1.0}, F32, F64)
    assert want[2] == [F32] + [F64] * 5  # k-diffusion's own draws, which the drop-in must make
    assert got[2] == want[2]


@pytest.mark.parametrize("x_dtype", DTYPES)
@pytest.mark.parametrize("name,options", [("sample_dpm_fast", {"n": 7, "eta": 1.0}),
                                          ("sample_dpm_adaptive", {"eta": 1.0})])
def test_dpm_solver_draws_match_k_diffusion(monkeypatch, name, options, x_dtype):
    options = dict(options)
    args = (0.03, 14.6) + ((options.pop("n"),) if "n" in options else ())
    x = (GM.noise(2, seed=3).double() * 14.6).to(x_dtype)
    got, want = both(monkeypatch, name, x, *args, **options)
    assert_same_draws(got, want)
    assert got[2]  # it drew


# float16 / bfloat16 latents on a wider schedule: k-diffusion's running x promotes at its first ``to_d`` (or, for
# dpmpp_2s_ancestral / dpmpp_sde, in the last Euler step to σ = 0), so from then on it calls the model with the
# promoted x, and it returns the promoted dtype; σ reaches the model in the latents' dtype (``sigma * s_in``).
PROMOTING = CHURN + ANCESTRAL + [("sample_lms", {}), ("sample_dpmpp_sde", {})]
HALF_ON_WIDER = [(F16, F32), (BF16, F32), (F16, F64), (F16, BF16), (BF16, F16)]


def calls_run(module, name, x, sigmas, options):
    """(result, [(x dtype, σ dtype) of every model call]) of one run after ``torch.manual_seed(0)``."""
    seen = []

    def recording(x, sigma):
        seen.append((x.dtype, sigma.dtype))
        return model(x, sigma)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(module, name)(recording, x, sigmas, disable=True, **options)
    return out, seen


@pytest.mark.parametrize("name,options", PROMOTING, ids=[f"{n}-{o}" for n, o in PROMOTING])
@pytest.mark.parametrize("x_dtype,sigma_dtype", HALF_ON_WIDER, ids=[f"{x}-on-{s}" for x, s in HALF_ON_WIDER])
def test_half_latents_on_a_wider_schedule_call_the_model_as_k_diffusion_does(name, options, x_dtype, sigma_dtype):
    if name == "sample_lms" and sigma_dtype == BF16:
        pytest.skip("k-diffusion's sample_lms reads the schedule with numpy, which has no bfloat16")
    sigmas = kd.get_sigmas_karras(6, 0.03, 14.6).double().to(sigma_dtype)
    x = (GM.noise(2, seed=3).double() * float(sigmas[0])).to(x_dtype)
    (out, calls), (k_out, k_calls) = (calls_run(m, name, x, sigmas, options) for m in (ours, kd))
    assert calls == k_calls, "the model was called in other dtypes than k-diffusion calls it"
    assert out.dtype == k_out.dtype == torch.promote_types(x_dtype, sigma_dtype)
    if sigma_dtype not in (F32, F64):
        return  # a half-precision schedule: k-diffusion's σ arithmetic rounds in it (its result is not compared)
    # what is left is k-diffusion's arithmetic in the latents' dtype before its first to_d (x − D, churn), which the
    # drop-in does in its float32 state: a rounding of the latents' dtype in the first step, no more
    scale = float(k_out.abs().max())
    tol = {F16: 2e-3, BF16: 1.5e-2}[x_dtype]
    torch.testing.assert_close(out.double(), k_out.double(), rtol=0, atol=tol * scale)


ALL_SIGMAS_SAMPLERS = ["sample_euler", "sample_heun", "sample_dpm_2", "sample_euler_ancestral",
                       "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral", "sample_lms", "sample_dpmpp_2m",
                       "sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"]


def _callbacks(module, name, x, sigmas, **options):
    seen = []
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(module, name)(model, x, sigmas, callback=seen.append, disable=True, **options)
    return seen


@pytest.mark.parametrize("name", ALL_SIGMAS_SAMPLERS)
@pytest.mark.parametrize("x_dtype,sigma_dtype", [(F16, F16), (F16, F32), (BF16, BF16), (BF16, F64)],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_the_callbacks_denoised_is_the_models_own_dtype(name, x_dtype, sigma_dtype):
    """k-diffusion hands the callback the model's own output: float16 from a float16 call. The drop-in handed on the
    registry's float32 D (half latents on a schedule of their dtype at every step; on a wider one at the first step,
    and every step of the samplers k-diffusion does not promote): twice the memory of every kept preview."""
    if name == "sample_lms" and sigma_dtype == BF16:
        pytest.skip("k-diffusion's sample_lms reads the schedule with .numpy(), which has no bfloat16")
    sigmas = kd.get_sigmas_karras(5, 0.03, 14.6).to(sigma_dtype)
    x = (GM.noise(2, seed=3) * 14.6).to(x_dtype)
    got, want = _callbacks(ours, name, x, sigmas), _callbacks(kd, name, x, sigmas)
    assert [d["denoised"].dtype for d in got] == [d["denoised"].dtype for d in want]
    assert [d["x"].dtype for d in got] == [d["x"].dtype for d in want]


@pytest.mark.parametrize("name,options", [("sample_euler", {}), ("sample_euler", {"s_churn": 1.0}),
                                          ("sample_heun", {"s_churn": 2.0}), ("sample_dpm_2", {}),
                                          ("sample_euler_ancestral", {}), ("sample_dpmpp_2m", {})])
def test_the_callbacks_sigma_hat_on_an_integer_schedule_is_k_diffusions(name, options):
    """k-diffusion's churn samplers report sigma_hat = sigmas[i] * (gamma + 1), a float of the default dtype on an
    integer schedule (the others sigmas[i] itself): the drop-in reported the int64 σ, and with churn on the σ̂
    truncated to an integer (17 for 17.5)."""
    sigmas = torch.tensor([14, 6, 2, 1, 0])
    x = GM.noise(2, seed=3) * 14.0
    got, want = _callbacks(ours, name, x, sigmas, **options), _callbacks(kd, name, x, sigmas, **options)
    for mine, theirs in zip(got, want, strict=True):
        assert mine["sigma_hat"].dtype == theirs["sigma_hat"].dtype
        torch.testing.assert_close(mine["sigma_hat"].double(), theirs["sigma_hat"].double(), rtol=1e-6, atol=0)
        assert mine["sigma"].dtype == theirs["sigma"].dtype
