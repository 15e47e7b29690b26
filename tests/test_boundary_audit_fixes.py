"""The top-level API's input boundary (samplers.sample / get_sigmas / initial_latent), an audit's defects: a schedule
that requires grad detached without a word, a torchdiffeq run that depended on the state's memory layout, a model
output that is not a tensor reported as a shape error, option scalars read by different rules (a 0-d tensor eta
refused as "not a real number" where a 0-d tensor order was taken), initial_latent's one-value special case checked
before the schedule's type and shape, and a sparse / nested x that failed inside torch."""
import types

import numpy as np
import pytest
import torch

import samplers


def _model(x, s, **kw):
    return x / (1 + s.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1)) ** 2)


class Counting:
    def __init__(self, model=_model):
        self.model, self.calls = model, 0

    def __call__(self, x, s, **kw):
        self.calls += 1
        return self.model(x, s, **kw)


SIG = samplers.get_sigmas("karras", 3, sigma_min=0.1, sigma_max=10.0)


def _noise(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# 1. a schedule that requires grad: read to floats, its gradient would be lost; refused before any model call

def _grad_sigmas():
    log_sig = torch.log(torch.tensor([10.0, 1.0, 0.1])).requires_grad_()
    return torch.cat([log_sig.exp(), torch.zeros(1)])


@pytest.mark.parametrize("form", ["tensor", "list of 0-d tensors"])
def test_a_schedule_that_requires_grad_is_refused_before_any_model_call(form):
    sigmas = _grad_sigmas() if form == "tensor" else list(_grad_sigmas())
    model = Counting()
    x = _noise(2, 3) * 10
    with pytest.raises(samplers.InvalidInput, match=r"sigmas requires grad.*Python floats.*sigmas\.detach\(\).*"
                                                    r"optimise_schedule"):
        samplers.sample("euler", model, x, sigmas, disable=True)
    assert model.calls == 0
    with pytest.raises(samplers.InvalidInput, match="sigmas requires grad"):
        samplers.initial_latent(_noise(2, 3), sigmas)
    with pytest.raises(samplers.InvalidInput, match="sigmas requires grad"):  # the one-value start too
        samplers.initial_latent(_noise(2, 3), sigmas[:1])


def test_a_detached_schedule_or_one_under_no_grad_runs_and_x_keeps_its_gradient():
    sigmas = _grad_sigmas()
    x = (_noise(2, 3) * 10).requires_grad_()
    out = samplers.sample("euler", _model, x, sigmas.detach(), disable=True)
    out.pow(2).mean().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    with torch.no_grad():  # nothing is recorded, so nothing is lost (the k-diffusion drop-in's functions)
        ref = samplers.sample("euler", _model, x.detach(), sigmas, disable=True)
    assert torch.equal(ref, samplers.sample("euler", _model, x.detach(), sigmas.detach(), disable=True))


# 2. an adaptive torchdiffeq run gives the same result for the same values in any memory layout

@pytest.mark.parametrize("name", ["torchdiffeq.fehlberg2", "torchdiffeq.adaptive_heun", "torchdiffeq.dopri5",
                                  "torchdiffeq.rk4"])
@pytest.mark.parametrize("to_zero", [True, False])
def test_torchdiffeq_result_does_not_depend_on_the_memory_layout(name, to_zero):
    x = _noise(2, 3, 4, 4) * 10
    sig = samplers.get_sigmas("karras", 4, sigma_min=0.1, sigma_max=10.0)
    sig = sig if to_zero else sig[:-1]
    ref = samplers.sample(name, _model, x, sig, disable=True)
    last = samplers.sample(name, _model, x.to(memory_format=torch.channels_last), sig, disable=True)
    strided = samplers.sample(name, _model, x.transpose(0, 1).contiguous().transpose(0, 1), sig, disable=True)
    assert torch.equal(ref, last) and torch.equal(ref, strided)
    assert last.is_contiguous(memory_format=torch.channels_last)  # handed back in the caller's layout, as euler does


# 3. a model output that is not a tensor: one mistake, one error (InvalidType, a TypeError), raw or through to_denoiser

@pytest.mark.parametrize("returned", [
    lambda x: types.SimpleNamespace(sample=x * 0.5),  # a diffusers UNet with return_dict=True
    lambda x: (x * 0.5,),
    lambda x: None,
])
def test_a_model_output_that_is_not_a_tensor_is_the_wrong_type_raw_or_wrapped(returned):
    x = _noise(1, 4, 8, 8) * 10
    vp = samplers.VPDiscrete.from_betas()
    raw = lambda x, s, **kw: returned(x)  # noqa: E731
    wrapped = samplers.to_denoiser(lambda x, t, **kw: returned(x), "eps", vp)
    messages = []
    for model, sig in [(raw, SIG), (wrapped, samplers.get_sigmas("karras", 3, native=vp))]:
        with pytest.raises(samplers.InvalidType) as err:
            samplers.sample("euler", model, x, sig, disable=True)
        assert isinstance(err.value, TypeError)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "not a tensor" in messages[0] and "return_dict=False and take [0]" in messages[0]


def test_a_tensor_output_of_the_wrong_shape_stays_invalid_input():
    with pytest.raises(samplers.InvalidInput, match=r"returned \(2, 1\) for an input of shape \(2, 3\)"):
        samplers.sample("euler", lambda x, s, **kw: x[:, :1], _noise(2, 3), SIG, disable=True)


# 4. option numbers and flags: a 0-d CPU tensor or a numpy value is the number / bool it holds, for reals and flags as
# for integers, in a sampler's options and a schedule's

def _run(name, **options):
    return samplers.sample(name, _model, _noise(2, 3) * 10, SIG, disable=True, **options)


@pytest.mark.parametrize("name, key, as_tensor, plain", [
    ("euler_ancestral", "eta", torch.tensor(0.5), 0.5),
    ("euler_ancestral", "eta", torch.tensor(0.5, dtype=torch.float64), 0.5),
    ("euler_ancestral", "eta", torch.tensor(1), 1.0),  # an integer tensor for a real, as an int is taken
    ("dpmpp_2m", "euler_at_final", np.True_, True),
    ("dpmpp_2m", "euler_at_final", torch.tensor(True), True),
    ("deis", "order", torch.tensor(2), 2),
])
def test_a_0d_tensor_or_numpy_option_runs_as_the_number_it_holds(name, key, as_tensor, plain):
    extra = {"seed": 0} if name == "euler_ancestral" else {}
    assert torch.equal(_run(name, **{key: as_tensor}, **extra), _run(name, **{key: plain}, **extra))


@pytest.mark.parametrize("key, value", [("rho", torch.tensor(7.0)), ("rho", np.float32(7.0))])
def test_a_schedule_option_reads_a_0d_tensor_as_its_range_ends_do(key, value):
    want = samplers.get_sigmas("karras", 3, sigma_min=0.1, sigma_max=10.0, rho=7.0)
    assert torch.equal(samplers.get_sigmas("karras", 3, sigma_min=torch.tensor(0.1, dtype=torch.float64), sigma_max=10.0,
                                             **{key: value}),
                       want)
    assert torch.equal(samplers.get_sigmas("ays_sd15", 10, append_zero=torch.tensor(True)),
                       samplers.get_sigmas("ays_sd15", 10, append_zero=True))


def test_a_0d_tensor_native_field_is_kept_as_the_number_it_holds():
    ve = samplers.VE(torch.tensor(0.002, dtype=torch.float64), 80.0)
    assert type(ve.sigma_min) is float and ve.sigma_min == 0.002


@pytest.mark.parametrize("value, match", [
    (torch.tensor([0.5]), r"eta must be a real number, got tensor\(\[0.5000\]\) \(Tensor\); a tensor is taken only "
                          r"as a 0-d real one: pass float\(eta\)"),
    (torch.tensor(True), r"eta must be a real number, got tensor\(True\)"),
    (np.True_, "eta must be a real number"),
    (torch.tensor(0.5, requires_grad=True), r"eta is a tensor that requires grad.*eta\.detach\(\)"),
    (torch.tensor(0.5, device="meta"), r"eta is a tensor on meta.*wait for the device: pass float\(eta\)"),
])
def test_an_option_tensor_that_is_not_one_host_real_is_refused_naming_the_fix(value, match):
    with pytest.raises(samplers.InvalidType, match=match):
        _run("euler_ancestral", eta=value, seed=0)


def test_a_flag_is_not_a_number():
    for value in (1, torch.tensor(1), np.int64(1), "True"):
        with pytest.raises(samplers.InvalidType, match="euler_at_final must be True or False"):
            _run("dpmpp_2m", euler_at_final=value)


# 5. initial_latent gives samplers.sample's error for the same malformed schedule, and names the caller's own input

@pytest.mark.parametrize("sigmas", [torch.tensor([[14.6, 0.0]]), torch.tensor([[14.6]]), {14.6}, {14.6, 0.0},
                                    [float("nan"), 0.0], torch.tensor([14.6, 0.0], device="meta")])
def test_initial_latent_refuses_a_schedule_as_a_run_does(sigmas):
    noise = _noise(1, 4, 8, 8)
    with pytest.raises(samplers.SamplersError) as ours:
        samplers.initial_latent(noise, sigmas)
    with pytest.raises(samplers.SamplersError) as run:
        samplers.sample("euler", _model, noise, sigmas, disable=True)
    assert "at least 2 values" not in str(run.value)  # none is refused for its length alone, a start's own case
    assert (type(ours.value), str(ours.value)) == (type(run.value), str(run.value))


@pytest.mark.parametrize("sigmas, match", [
    ([0.0], r"sigmas = \[0\] starts no run"),
    ([float("nan")], r"sigmas\[0\] = nan is invalid"),
    ([-1.0], r"sigmas\[0\] = -1.0 is invalid"),
    ([], "at least 1 value, got none"),
])
def test_initial_latent_checks_a_lone_start_itself(sigmas, match):
    with pytest.raises(samplers.InvalidInput, match=match) as err:
        samplers.initial_latent(_noise(1, 4), sigmas)
    assert "sigmas[1]" not in str(err.value)  # never a value the caller did not pass


def test_initial_latent_of_a_lone_start_is_that_of_its_schedule():
    noise = _noise(1, 4)
    sig = samplers.get_sigmas("karras", 3, sigma_min=0.1, sigma_max=10.0)
    for start in (sig[:1], [float(sig[0])], [sig[0]]):
        assert torch.equal(samplers.initial_latent(noise, start), samplers.initial_latent(noise, sig))
    assert torch.equal(samplers.initial_latent(noise, [float("inf")]), noise)


# 6. a sparse or nested x is refused by name before any model call, not by torch's error from check_start

@pytest.mark.parametrize("make, match", [
    (lambda: torch.randn(2, 3).to_sparse(), r"x is a sparse_coo tensor.*pass x\.to_dense\(\)"),
    (lambda: torch.randn(2, 3).to_sparse_csr(), r"x is a sparse_csr tensor.*pass x\.to_dense\(\)"),
    (lambda: torch.nested.nested_tensor([torch.randn(3), torch.randn(4)]), r"x is a nested tensor.*to_padded_tensor"),
])
def test_a_sparse_or_nested_x_is_refused_by_name(make, match):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR / nested tensors are in prototype stage"
        x = make()
    model = Counting()
    with pytest.raises(samplers.InvalidInput, match=match):
        samplers.sample("euler", model, x, SIG, disable=True)
    assert model.calls == 0
    with pytest.raises(samplers.InvalidInput, match=match.replace("x", "noise", 2)):
        samplers.initial_latent(x, SIG)
