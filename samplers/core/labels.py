"""The names other tools give samplers and schedules, as data: A1111 / Forge labels, ComfyUI sampler and scheduler
names, diffusers scheduler classes. :mod:`samplers.core.names` resolves them; nothing else reads these tables.

A sampler entry is ``label: (registry sampler, options, schedule, how the schedule is implied)``:

- ``schedule`` is the schedule the tool uses with that label, or None (the caller's, or the model's own);
- ``"default"`` means the tool picks it when the user does not (A1111's "Automatic" scheduler: "DPM++ 2M" runs on
  Karras sigmas, a caller's schedule replaces it); ``"explicit"`` means the label names it ("DPM++ 2M Karras": a
  caller's different schedule is a conflict, and an error).
"""
from __future__ import annotations

# The SDE samplers of A1111 and ComfyUI draw from k-diffusion's BrownianTreeNoiseSampler seeded by the user's seed:
# "brownian_tree" is that sampler with the tree on the CPU (ComfyUI's default SDE samplers; A1111 on a CPU), one tree
# per image seeded seed + k (A1111's batch seeds; ComfyUI's one tree for the batch for a batch of one);
# "brownian_tree_device" draws it on the latent's device (ComfyUI's *_gpu samplers; A1111 on a GPU, where k-diffusion
# puts the tree).
BROWNIAN = {"noise_sampler": "brownian_tree"}
BROWNIAN_DEVICE = {"noise_sampler": "brownian_tree_device"}
HEUN = {"solver_type": "heun"}
# ComfyUI's other stochastic samplers draw default_noise_sampler(x, seed): a generator on the latent's device seeded
# with the sampler's seed (+ 1 on the CPU), "comfyui" here (one per image, seed + k: ComfyUI's numbers for one image)
COMFY_NOISE = {"noise_sampler": "comfyui"}
# ComfyUI's sample_euler_ancestral: where η > 1 caps σ_up at σ_next (σ_down = 0) it returns the denoised x and draws no
# noise (``if sigma_down == 0: x = denoised``); k-diffusion's adds σ_up of it there.
EULER_ANCESTRAL_COMFY = {"noise_at_zero_down": False}
# ComfyUI's sample_ipndm / sample_ipndm_v (which Forge's iPNDM / iPNDM_v run too): the step to σ = 0 returns the
# denoised x, and ipndm_v weights the history by the step ratios (not lms's exact variable-step weights).
IPNDM_COMFY = {"final_denoise": True}
IPNDM_V_COMFY = {"final_denoise": True, "variable_steps": True}
# ComfyUI's sample_lms: its step to σ = 0 returns the denoised x (k-diffusion's takes the Adams–Bashforth step).
LMS_COMFY = {"final_denoise": True}
# ComfyUI's sample_deis (Forge's DEIS): DEIS-tAB coefficients, no lowering of the order on the last steps.
DEIS_COMFY = {"mode": "tab", "lower_order_final": False}
# ComfyUI's and A1111's DPM fast / DPM adaptive call k-diffusion's sample_dpm_fast / sample_dpm_adaptive on the range
# sigma_max = sigmas[0], sigma_min = sigmas[-2] (the smallest non-zero σ), fast with n = len(sigmas) − 1 calls
# (comfy/samplers.py KSAMPLER.sample; A1111 modules/sd_samplers_kdiffusion.py): every call integrates, x is returned
# at σ_min without a final denoise, and adaptive is one solve over the range (the σ in between ignored) with
# k-diffusion's error norm over the whole batch.
DPM_FAST_TOOLS = {"final_denoise": False}
DPM_ADAPTIVE_TOOLS = {"final_denoise": False, "through_schedule": False, "error_norm": "batch"}
# Options of the registry sampler that a ComfyUI name's function does not take (KSAMPLER's extra_options there are a
# TypeError, and KSamplerSelect passes none): refused when a caller passes them (samplers.core.names.merge_options),
# where they would run another image than ComfyUI can make. Read from the functions' signatures at
# comfyanonymous/ComfyUI 02159d81 (comfy/k_diffusion/sampling.py; comfy/samplers.py ksampler / sampler_object;
# comfy/extra_samplers/uni_pc.py), each quoted below less the leading (model, x, sigmas, extra_args, callback,
# disable). Not listed, though no parameter of ComfyUI's has their name:
# - an option the name's label sets (a caller's other value is already refused as contradicting it, the same value is
#   ComfyUI's run);
# - ``seed`` (ComfyUI's extra_args["seed"], which the adapter reads) and dpm_adaptive's ``info`` / ``max_steps`` (a
#   report and a cap on attempted steps: no other image);
# - a ComfyUI setting under another name: deis's ``order`` (sample_deis's max_order, the same warm-up), and
#   sa_solver's / sa_solver_pece's ``eta`` and ``sde_interval``, which ComfyUI's SamplerSASolver node passes as
#   tau_func = get_tau_interval_func(percent_to_sigma(sde_start_percent), percent_to_sigma(sde_end_percent), eta)
#   (comfy_extras/nodes_custom_sampler.py; its tau_func reads σ_next, the registry's "eta inside sde_interval").
# ComfyUI's ksampler("dpm_fast") is dpm_fast_function(model, noise, sigmas, extra_args, callback, disable), which calls
# sample_dpm_fast at k-diffusion's defaults (η = 0: it draws nothing); its dpm_adaptive_function passes
# **extra_options on (η with ComfyUI's noise: COMFY_NOISE below).
_CHURN_ONLY = "draws its churn noise (s_churn > 0) with torch.randn_like(x), from torch's global generator"
_DPMPP_2M_SDE = "(eta, s_noise, noise_sampler, solver_type) takes no euler_at_final: its last step to 0 is the denoise"
_DPMPP_3M_SDE = ("(eta, s_noise, noise_sampler) takes no other option: the 3M rule as k-diffusion has it, its last "
                 "step to 0 the denoise")
_IPNDM = "ComfyUI's sample_ipndm(max_order) takes the constant-step weights only (sample_ipndm_v: comfyui:ipndm_v)"
_DEIS = "ComfyUI's sample_deis(max_order, deis_mode) computes its own tAB weights"
_SA_SOLVER = ("ComfyUI's {}(tau_func, s_noise, noise_sampler, predictor_order, corrector_order, {}simple_order_2) "
              "computes its own weights (a Vandermonde solve), not diffusers' float32 ones")
_UNIPC = ("{} (comfy/extra_samplers/uni_pc.py) takes no other option: its order min(3, steps − 1), its "
          "corrector and lower_order_final=True are fixed")
_UNIPC_KEYS = ("order", "corrector", "lower_order_final", "disable_corrector")
COMFYUI_NOT_TAKEN: dict[str, tuple[tuple[str, ...], str]] = {
    "dpm_fast": (("eta", "s_noise", "noise_sampler"),
                 "ComfyUI's dpm_fast_function (comfy/samplers.py ksampler) takes no options and runs k-diffusion's "
                 "sample_dpm_fast at eta = 0, drawing no noise"),
    **{name: (("noise_sampler",), f"ComfyUI's {function}(s_churn, s_tmin, s_tmax, s_noise) {_CHURN_ONLY}")
       for name, function in (("euler", "sample_euler"), ("heun", "sample_heun"), ("dpm_2", "sample_dpm_2"),
                              ("heunpp2", "sample_heunpp2"), ("ddim", "sample_euler"))},
    "lms": (("prior_sigmas",), "ComfyUI's sample_lms(order) starts its history at sigmas[0]"),
    "dpmpp_2m": (("solver_type", "euler_at_final"),
                 "ComfyUI's sample_dpmpp_2m() takes no option: the midpoint rule, its last step to 0 first order"),
    **{name: (("euler_at_final",), f"ComfyUI's {function}{_DPMPP_2M_SDE}")
       for name, function in (("dpmpp_2m_sde", "sample_dpmpp_2m_sde"), ("dpmpp_2m_sde_gpu", "sample_dpmpp_2m_sde_gpu"),
                              ("dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde_heun"),
                              ("dpmpp_2m_sde_heun_gpu", "sample_dpmpp_2m_sde_heun_gpu"))},
    **{name: (("solver_type", "lower_order_final", "euler_at_final", "variant"), f"ComfyUI's {function}{_DPMPP_3M_SDE}")
       for name, function in (("dpmpp_3m_sde", "sample_dpmpp_3m_sde"),
                              ("dpmpp_3m_sde_gpu", "sample_dpmpp_3m_sde_gpu"))},
    "ddpm": (("s_noise",), "ComfyUI's sample_ddpm(noise_sampler) adds its noise at full scale"),
    "lcm": (("eta",), "ComfyUI's sample_lcm(noise_sampler, s_noise, s_noise_end, noise_clip_std) re-noises with fresh "
                      "noise only (eta = 1)"),
    "ipndm": (("variable_steps",), _IPNDM),
    "sample_ipndm": (("variable_steps",), _IPNDM),
    "deis": (("weights",), _DEIS),
    "sample_deis": (("weights",), _DEIS),
    "sa_solver": (("weights",), _SA_SOLVER.format("sample_sa_solver", "use_pece, ")),
    "sa_solver_pece": (("weights",), _SA_SOLVER.format("sample_sa_solver_pece", "")),
    "exp_heun_2_x0": (("noise_sampler",), "ComfyUI's sample_exp_heun_2_x0(solver_type) runs eta = s_noise = 0, "
                                          "drawing no noise"),
    "uni_pc": (_UNIPC_KEYS, "ComfyUI's " + _UNIPC.format("sample_unipc(variant)")),
    "uni_pc_bh2": (_UNIPC_KEYS, "ComfyUI's " + _UNIPC.format("sample_unipc_bh2()")),
}
# A1111 passes its "Eta for ancestral samplers" setting (opts.eta_ancestral, default 1.0) to every k-diffusion
# function that takes eta (KDiffusionSampler.initialize), so its DPM fast / adaptive are ancestral by default;
# ComfyUI calls them with k-diffusion's default eta = 0.
A1111_ETA = {"eta": 1.0}
# The options of A1111's labels that are A1111's settings, which its users change (its "Eta for ancestral samplers"):
# a caller's value replaces the label's, as A1111 passes the setting's value (to a function that takes eta:
# A1111_TAKES_ETA below; under the others it is dropped at A1111's default, else refused).
A1111_SETTINGS = frozenset({"eta"})
# A1111's sampler settings s_churn, s_tmin, s_tmax, s_noise (Settings > Sampler parameters; its API payload's fields
# of those names) reach a k-diffusion function only where its sampler_extra_params lists them for that function
# (modules/sd_samplers_kdiffusion.py, 1.6+; KDiffusionSampler.initialize): every other function runs on its own
# defaults whatever the setting — Euler a and DPM adaptive at s_noise = 1, LMS / DPM++ 2M / Restart / LCM and the
# timestep samplers DDIM / PLMS / UniPC without any. Keyed by k-diffusion's function name, which is "sample_" + the
# registry sampler's name for every function listed.
A1111_SAMPLER_PARAMS: dict[str, tuple[str, ...]] = {
    "sample_euler": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "sample_heun": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "sample_dpm_2": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "sample_dpm_fast": ("s_noise",), "sample_dpm_2_ancestral": ("s_noise",), "sample_dpmpp_2s_ancestral": ("s_noise",),
    "sample_dpmpp_sde": ("s_noise",), "sample_dpmpp_2m_sde": ("s_noise",), "sample_dpmpp_3m_sde": ("s_noise",),
}
# Those settings' values that change nothing, which A1111's API payload and its settings send for every sampler
# (s_tmax 0 is A1111's "no upper bound", as inf): a label whose function does not receive the setting accepts them
# and drops them, as A1111 does; any other value is refused there (A1111 would ignore it: another image than asked).
A1111_SAMPLER_PARAM_NO_OPS: dict[str, tuple[float, ...]] = {
    "s_churn": (0.0,), "s_tmin": (0.0,), "s_tmax": (0.0, float("inf")), "s_noise": (1.0,), "eta": (1.0,)}
# A1111's eta reaches a function by another rule: its sampler passes its eta (the request's, else its setting) only to
# a function with an ``eta`` parameter (sd_samplers_common.Sampler.initialize, 1.6+, and KDiffusionSampler.initialize
# before: ``if 'eta' in inspect.signature(self.func).parameters``). These are the functions that have one, keyed as
# above (A1111's timestep DDIM, sd_samplers_timesteps_impl.ddim, as "sample_ddim"). Without one: k-diffusion's
# sample_euler / _heun / _dpm_2 / _lms / _dpmpp_2m, A1111's restart_sampler, sd_samplers_lcm.sample_lcm (which re-noises
# with fresh noise only, η = 1, whatever the setting), its timestep plms / unipc, and Forge's DDPM / iPNDM / DEIS /
# HeunPP2. Under their labels a caller's eta is what A1111 ignores: dropped at its setting's default, else refused
# (samplers.core.names._a1111_received), as the settings above.
A1111_TAKES_ETA = frozenset({
    "sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral", "sample_dpm_fast",
    "sample_dpm_adaptive", "sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_ddim"})
# The default of A1111's eta setting is the no-op above (its "Eta for ancestral samplers", opts.eta_ancestral, 1.0,
# which its KDiffusionSampler and LCMSampler read) but for its timestep samplers (CompVisSampler: DDIM, PLMS, UniPC),
# which read "Eta DDIM" (opts.eta_ddim, 0.0): the no-ops of their functions where they differ.
A1111_TIMESTEP_NO_OPS: dict[str, tuple[float, ...]] = {"eta": (0.0,)}
# A1111's k-diffusion samplers draw their in-loop noise with torch.randn_like, which A1111 answers from each image's
# own generator, seeded with the image's seed, after the image's starting noise (modules/rng.py ImageRNG.next through
# sd_samplers_common.TorchHijack); its default source, a generator on the latents' device, is "a1111" (see
# samplers.core.a1111_rng; "a1111_cpu" / "a1111_nv" for its CPU / NV sources). The labels whose draws come from
# there: the ancestral ones, the churn of Euler / Heun / DPM2, DPM fast / adaptive (η), LCM (sd_samplers_lcm draws
# through k-diffusion's default_noise_sampler), Restart (sd_samplers_extra.restart_sampler: the module's torch, which
# A1111 replaces for every KDiffusionSampler).
A1111_DRAWS = {"noise_sampler": "a1111"}
# ComfyUI's sample_sa_solver / sample_sa_solver_pece: on a schedule that ends at 0 it lowers the orders near the end
# (the predictor's at step i of n to at most n − 1 − i, the corrector's to at most n − i), not diffusers' rule.
SA_SOLVER_COMFY = {"lower_order_final": "comfyui"}
# ComfyUI's sample_gradient_estimation: its step to σ = 0 returns the denoised x.
GRADIENT_ESTIMATION_COMFY = {"final_denoise": True}
# ComfyUI's sample_unipc (comfy/extra_samplers/uni_pc.py): a schedule ending in 0 ends at σ = 0.001 instead
# (timesteps[-1] = 0.001), reached by the predictor like any other step, and x there is returned (x /=
# marginal_alpha(0.001): the VE state), not denoised; its order min(3, steps − 1) is what the registry's order 3 with
# the warm-up and lower_order_final runs.
UNIPC_COMFY = {"final_sigma": 0.001}
# ComfyUI's sample_er_sde: its integrals are a 200-point Riemann sum (the registry's are Gauss-Legendre).
ER_SDE_COMFY = {"quadrature": "riemann"}
# ComfyUI's sample_exp_heun_2_x0 / _sde: sample_seeds_2 with r = 1 and the φ₂ weights (deterministic: η = s_noise = 0).
EXP_HEUN_2_X0 = {"r": 1.0, "solver_type": "phi_2", "eta": 0.0, "s_noise": 0.0}
EXP_HEUN_2_X0_SDE = {"r": 1.0, "solver_type": "phi_2"}

# A1111 / Forge (modules/sd_samplers_kdiffusion.py and sd_samplers_timesteps.py): the labels of the sampler menu
# with their k_* aliases, and the "<label> Karras" / "<label> Exponential" labels of versions before 1.9.
# A1111's "discard_next_to_last_sigma" (DPM2, DPM2 a, DPM++ 3M SDE) is the schedule operation of that name, on a
# schedule built one step longer (A1111 adds the step it drops). Its "Automatic" schedule type is the sampler's own
# scheduler where it has one, else the model's get_sigmas(steps) — k-diffusion's evenly spaced training timesteps,
# the "Uniform" type (``linspace``). DDIM, PLMS and UniPC are A1111's timestep samplers (sd_samplers_timesteps),
# which ignore the Schedule type: DDIM and PLMS step its own timesteps clip(range(0, 1000, ⌊1000/n⌋) + 1, 0, 999)
# down to timestep 1 and return the VP latent there, without a final denoise; their labels run the registry's
# ddim / plms on those timesteps' σ (the schedule "a1111:Timesteps", named: a caller's other schedule is refused) with
# A1111_TIMESTEP_STATE: the start x is A1111's x_T (the unit noise), the result A1111's VP latent at timestep 1.
# UniPC (A1111's own UniPC port: its NoiseScheduleVP("discrete"), time_uniform t from 1 to 1/N, the model called at
# fractional timesteps 1000·(t − 1/N)) is not reproduced: its label runs unipc_bh1 on the caller's schedule
# (names.md says so, with the measured difference).
A1111_TIMESTEP_STATE = {"vp_state": True}
A1111_TIMESTEP_SAMPLERS = frozenset({"DDIM", "PLMS", "UniPC"})
A1111: dict[str, tuple] = {
    "DPM++ 2M": ("dpmpp_2m", {}, "a1111:Karras", "default"),
    "k_dpmpp_2m": ("dpmpp_2m", {}, "a1111:Karras", "default"),
    "DPM++ 2M Karras": ("dpmpp_2m", {}, "a1111:Karras", "explicit"),
    "DPM++ SDE": ("dpmpp_sde", BROWNIAN, "a1111:Karras", "default"),
    "k_dpmpp_sde": ("dpmpp_sde", BROWNIAN, "a1111:Karras", "default"),
    "DPM++ SDE Karras": ("dpmpp_sde", BROWNIAN, "a1111:Karras", "explicit"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", BROWNIAN, "a1111:Exponential", "default"),
    "k_dpmpp_2m_sde": ("dpmpp_2m_sde", BROWNIAN, "a1111:Exponential", "default"),
    "DPM++ 2M SDE Karras": ("dpmpp_2m_sde", BROWNIAN, "a1111:Karras", "explicit"),
    "DPM++ 2M SDE Exponential": ("dpmpp_2m_sde", BROWNIAN, "a1111:Exponential", "explicit"),
    "DPM++ 2M SDE Heun": ("dpmpp_2m_sde", {**BROWNIAN, **HEUN}, "a1111:Exponential", "default"),
    "k_dpmpp_2m_sde_heun": ("dpmpp_2m_sde", {**BROWNIAN, **HEUN}, "a1111:Exponential", "default"),
    "DPM++ 2M SDE Heun Karras": ("dpmpp_2m_sde", {**BROWNIAN, **HEUN}, "a1111:Karras", "explicit"),
    "DPM++ 2M SDE Heun Exponential": ("dpmpp_2m_sde", {**BROWNIAN, **HEUN}, "a1111:Exponential", "explicit"),
    "DPM++ 2S a": ("dpmpp_2s_ancestral", A1111_DRAWS, "a1111:Karras", "default"),
    "k_dpmpp_2s_a": ("dpmpp_2s_ancestral", A1111_DRAWS, "a1111:Karras", "default"),
    "DPM++ 2S a Karras": ("dpmpp_2s_ancestral", A1111_DRAWS, "a1111:Karras", "explicit"),
    "DPM++ 3M SDE": ("dpmpp_3m_sde", BROWNIAN, "a1111:Exponential", "default"),
    "k_dpmpp_3m_sde": ("dpmpp_3m_sde", BROWNIAN, "a1111:Exponential", "default"),
    "DPM++ 3M SDE Karras": ("dpmpp_3m_sde", BROWNIAN, "a1111:Karras", "explicit"),
    "DPM++ 3M SDE Exponential": ("dpmpp_3m_sde", BROWNIAN, "a1111:Exponential", "explicit"),
    "Euler a": ("euler_ancestral", A1111_DRAWS, "a1111:Uniform", "default"),
    "k_euler_a": ("euler_ancestral", A1111_DRAWS, "a1111:Uniform", "default"),
    "k_euler_ancestral": ("euler_ancestral", A1111_DRAWS, "a1111:Uniform", "default"),
    "Euler": ("euler", A1111_DRAWS, "a1111:Uniform", "default"),
    "k_euler": ("euler", A1111_DRAWS, "a1111:Uniform", "default"),
    "LMS": ("lms", {}, "a1111:Uniform", "default"),
    "k_lms": ("lms", {}, "a1111:Uniform", "default"),
    "LMS Karras": ("lms", {}, "a1111:Karras", "explicit"),
    "Heun": ("heun", A1111_DRAWS, "a1111:Uniform", "default"),
    "k_heun": ("heun", A1111_DRAWS, "a1111:Uniform", "default"),
    "DPM2": ("dpm_2", A1111_DRAWS, "a1111:Karras", "default"),
    "k_dpm_2": ("dpm_2", A1111_DRAWS, "a1111:Karras", "default"),
    "DPM2 Karras": ("dpm_2", A1111_DRAWS, "a1111:Karras", "explicit"),
    "DPM2 a": ("dpm_2_ancestral", A1111_DRAWS, "a1111:Karras", "default"),
    "k_dpm_2_a": ("dpm_2_ancestral", A1111_DRAWS, "a1111:Karras", "default"),
    "DPM2 a Karras": ("dpm_2_ancestral", A1111_DRAWS, "a1111:Karras", "explicit"),
    "DPM fast": ("dpm_fast", {**DPM_FAST_TOOLS, **A1111_ETA, **A1111_DRAWS}, "a1111:Uniform", "default"),
    "k_dpm_fast": ("dpm_fast", {**DPM_FAST_TOOLS, **A1111_ETA, **A1111_DRAWS}, "a1111:Uniform", "default"),
    "DPM adaptive": ("dpm_adaptive", {**DPM_ADAPTIVE_TOOLS, **A1111_ETA, **A1111_DRAWS}, "a1111:Uniform", "default"),
    "k_dpm_ad": ("dpm_adaptive", {**DPM_ADAPTIVE_TOOLS, **A1111_ETA, **A1111_DRAWS}, "a1111:Uniform", "default"),
    "Restart": ("restart", {"restart": "a1111", **A1111_DRAWS}, "a1111:Karras", "default"),
    "DDIM": ("ddim", {**A1111_TIMESTEP_STATE, **A1111_DRAWS}, "a1111:Timesteps", "explicit"),
    "PLMS": ("plms", A1111_TIMESTEP_STATE, "a1111:Timesteps", "explicit"),
    "UniPC": ("unipc_bh1", {}, None, None),
    # Forge's ('DDPM', AlterSampler of sample_ddpm): a k-diffusion sampler on A1111's schedule types, Automatic Uniform
    "DDPM": ("ddpm", {}, "a1111:Uniform", "default"),
    "LCM": ("lcm", A1111_DRAWS, "a1111:LCM", "default"),
    "iPNDM": ("ipndm", IPNDM_COMFY, "a1111:Uniform", "default"),
    "iPNDM_v": ("ipndm", IPNDM_V_COMFY, "a1111:Uniform", "default"),
    "IPNDM": ("ipndm", IPNDM_COMFY, "a1111:Uniform", "default"),  # Forge's menu spells them so
    "IPNDM_V": ("ipndm", IPNDM_V_COMFY, "a1111:Uniform", "default"),
    "DEIS": ("deis", DEIS_COMFY, "a1111:Uniform", "default"),
    "HeunPP2": ("heunpp2", {}, "a1111:Uniform", "default"),  # Forge's ('HeunPP2', 'sample_heunpp2', ['heunpp2'], {})
    # the aliases of the "<label> Karras" / "Exponential" entries of versions before 1.9, and LCM's
    "k_lms_ka": ("lms", {}, "a1111:Karras", "explicit"),
    "k_dpm_2_ka": ("dpm_2", A1111_DRAWS, "a1111:Karras", "explicit"),
    "k_dpm_2_a_ka": ("dpm_2_ancestral", A1111_DRAWS, "a1111:Karras", "explicit"),
    "k_dpmpp_2s_a_ka": ("dpmpp_2s_ancestral", A1111_DRAWS, "a1111:Karras", "explicit"),
    "k_dpmpp_2m_ka": ("dpmpp_2m", {}, "a1111:Karras", "explicit"),
    "k_dpmpp_sde_ka": ("dpmpp_sde", BROWNIAN, "a1111:Karras", "explicit"),
    "k_dpmpp_2m_sde_exp": ("dpmpp_2m_sde", BROWNIAN, "a1111:Exponential", "explicit"),
    "k_dpmpp_2m_sde_heun_ka": ("dpmpp_2m_sde", {**BROWNIAN, **HEUN}, "a1111:Karras", "explicit"),
    "k_dpmpp_2m_sde_heun_exp": ("dpmpp_2m_sde", {**BROWNIAN, **HEUN}, "a1111:Exponential", "explicit"),
    "k_dpmpp_3m_sde_ka": ("dpmpp_3m_sde", BROWNIAN, "a1111:Karras", "explicit"),
    "k_dpmpp_3m_sde_exp": ("dpmpp_3m_sde", BROWNIAN, "a1111:Exponential", "explicit"),
    "k_lcm": ("lcm", A1111_DRAWS, "a1111:LCM", "default"),
}
# A1111 / Forge samplers this library does not provide, and why (refused by name, never replaced by something else).
A1111_REFUSED: dict[str, str] = {
    **{name: "A1111's DDIM CFG++ (Chung et al. 2024, arXiv:2406.08070) steps with the unconditional prediction, which a "
             "guided denoiser does not expose to the sampler; use 'DDIM' (with a lower CFG scale) instead"
       for name in ("DDIM CFG++", "ddim_cfgpp")},
    # versions 1.6-1.8 list it for both "DPM++ 2M SDE" and "DPM++ 2M SDE Karras"; the later in the list wins, and
    # the order changed between versions (1.6: the Karras label's; 1.7-1.8: the plain one's)
    "k_dpmpp_2m_sde_ka": "A1111 1.6-1.8 give this alias to both 'DPM++ 2M SDE' and 'DPM++ 2M SDE Karras', and which "
                         "one it runs depends on the version; name the label: 'DPM++ 2M SDE Karras' (its Karras "
                         "schedule) or 'DPM++ 2M SDE'",
}
# A1111 1.9+'s Schedule types (modules/sd_schedulers.py): each type's label with its name and aliases. Its
# sd_samplers.get_sampler_and_scheduler reads a sampler name that ends in " <label, name or alias>" as that sampler on
# that type (the API's sampler_name, infotext: "Euler a Karras", "DPM++ 2M sgm_uniform", "Heun karras"); "Automatic"
# is the sampler's own choice (its label's default schedule here).
A1111_SCHEDULE_TYPES: dict[str, tuple[str, ...]] = {
    "Automatic": ("automatic",), "Uniform": ("uniform",), "Karras": ("karras",), "Exponential": ("exponential",),
    "Polyexponential": ("polyexponential",), "SGM Uniform": ("sgm_uniform", "SGMUniform"),
    "KL Optimal": ("kl_optimal",), "Align Your Steps": ("align_your_steps",), "Simple": ("simple",),
    "Normal": ("normal",), "DDIM": ("ddim",), "Beta": ("beta",),
    # Forge's and reForge's "Turbo"; reForge's further Align Your Steps types (their names as the tools spell them)
    "Turbo": ("turbo",), "Align Your Steps GITS": ("align_your_steps_GITS",),
    "Align Your Steps 11": ("align_your_steps_11",), "Align Your Steps 32": ("align_your_steps_32",),
}
# Labels A1111's txt2img runs on the model's whole σ range (KDiffusionSampler.sample: sigma_min = model_wrap.sigmas[0],
# sigma_max = model_wrap.sigmas[-1], n = steps) whatever Schedule type is chosen: their "Automatic" (Uniform) has those
# ends; the pipeline refuses a schedule with other ends, which A1111 would ignore (its img2img would not).
A1111_MODEL_RANGE = {"DPM fast", "k_dpm_fast", "DPM adaptive", "k_dpm_ad"}
# Labels whose A1111 runs drop the next-to-last sigma (``discard_next_to_last_sigma``) of a schedule one step longer.
A1111_DISCARD_PENULTIMATE = {"DPM2", "k_dpm_2", "DPM2 Karras", "k_dpm_2_ka", "DPM2 a", "k_dpm_2_a", "DPM2 a Karras",
                             "k_dpm_2_a_ka", "DPM++ 3M SDE", "k_dpmpp_3m_sde", "DPM++ 3M SDE Karras",
                             "k_dpmpp_3m_sde_ka", "DPM++ 3M SDE Exponential", "k_dpmpp_3m_sde_exp"}

# ComfyUI (comfy/samplers.py KSAMPLER_NAMES) where the name is not the registry's own: the *_gpu variants draw the
# Brownian tree on the device, *_heun uses the Heun-type second-order term, and ComfyUI's SDE samplers default to
# k-diffusion's Brownian-tree noise (seeded by the sampler's seed). The registry names themselves (euler, dpmpp_2m,
# ...) resolve to the registry; to get ComfyUI's exact defaults for those as well, prefix the name:
# "comfyui:dpmpp_2m_sde".
COMFYUI: dict[str, tuple] = {
    "euler": ("euler", {}, None, None),
    "euler_ancestral": ("euler_ancestral", {**EULER_ANCESTRAL_COMFY, **COMFY_NOISE}, None, None),
    "heun": ("heun", {}, None, None),
    "heunpp2": ("heunpp2", {}, None, None),
    "dpm_2": ("dpm_2", {}, None, None),
    "dpm_2_ancestral": ("dpm_2_ancestral", COMFY_NOISE, None, None),
    "lms": ("lms", LMS_COMFY, None, None),
    "dpm_fast": ("dpm_fast", DPM_FAST_TOOLS, None, None),
    # (ComfyUI's DPMSolver draws default_noise_sampler(x, seed) where η > 0: ComfyUI's noise)
    "dpm_adaptive": ("dpm_adaptive", {**DPM_ADAPTIVE_TOOLS, **COMFY_NOISE}, None, None),
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", COMFY_NOISE, None, None),
    "dpmpp_sde": ("dpmpp_sde", BROWNIAN, None, None),
    "dpmpp_sde_gpu": ("dpmpp_sde", BROWNIAN_DEVICE, None, None),
    "dpmpp_2m": ("dpmpp_2m", {}, None, None),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", BROWNIAN, None, None),
    "dpmpp_2m_sde_gpu": ("dpmpp_2m_sde", BROWNIAN_DEVICE, None, None),
    "dpmpp_2m_sde_heun": ("dpmpp_2m_sde", {**BROWNIAN, **HEUN}, None, None),
    "dpmpp_2m_sde_heun_gpu": ("dpmpp_2m_sde", {**BROWNIAN_DEVICE, **HEUN}, None, None),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", BROWNIAN, None, None),
    "dpmpp_3m_sde_gpu": ("dpmpp_3m_sde", BROWNIAN_DEVICE, None, None),
    "ddpm": ("ddpm", COMFY_NOISE, None, None),
    "lcm": ("lcm", COMFY_NOISE, None, None),
    "ipndm": ("ipndm", IPNDM_COMFY, None, None),
    "ipndm_v": ("ipndm", IPNDM_V_COMFY, None, None),
    "deis": ("deis", DEIS_COMFY, None, None),
    # ComfyUI's own function names for them (k-diffusion has none of the three)
    "sample_ipndm": ("ipndm", IPNDM_COMFY, None, None),
    "sample_ipndm_v": ("ipndm", IPNDM_V_COMFY, None, None),
    "sample_deis": ("deis", DEIS_COMFY, None, None),
    "res_multistep": ("res_multistep", {}, None, None),
    "res_multistep_ancestral": ("res_multistep_ancestral", COMFY_NOISE, None, None),
    "gradient_estimation": ("gradient_estimation", GRADIENT_ESTIMATION_COMFY, None, None),
    "er_sde": ("er_sde", {**ER_SDE_COMFY, **COMFY_NOISE}, None, None),
    "seeds_2": ("seeds_2", COMFY_NOISE, None, None),
    "exp_heun_2_x0": ("seeds_2", EXP_HEUN_2_X0, None, None),
    "exp_heun_2_x0_sde": ("seeds_2", {**EXP_HEUN_2_X0_SDE, **COMFY_NOISE}, None, None),
    "seeds_3": ("seeds_3", COMFY_NOISE, None, None),
    "sa_solver": ("sa_solver", {**COMFY_NOISE, **SA_SOLVER_COMFY}, None, None),
    "sa_solver_pece": ("sa_solver_pece", {**COMFY_NOISE, **SA_SOLVER_COMFY}, None, None),
    "ddim": ("euler", {}, None, None),  # ComfyUI: KSAMPLER(sample_euler, inpaint_options={"random": True})
    "uni_pc": ("unipc_bh1", UNIPC_COMFY, None, None),
    "uni_pc_bh2": ("unipc_bh2", UNIPC_COMFY, None, None),
}
# ComfyUI names whose KSampler node builds its schedule one step longer and drops the next-to-last sigma
# (comfy/samplers.py DISCARD_PENULTIMATE_SIGMA_SAMPLERS); SamplerCustom takes the sigmas as given.
COMFYUI_DISCARD_PENULTIMATE = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
# What ComfyUI's samplers do on flow models (model_sampling a CONST: SD3, Flux, ...; x = (1 − t)·x0 + t·n, σ = t),
# read from comfy/k_diffusion/sampling.py and comfy/samplers.py (comfyanonymous/ComfyUI 02159d81). The ComfyUI
# adapter (samplers.interop.comfyui) follows these tables for ComfyUI names; registry names run the registry's rule in
# σ = t/(1 − t), x/(1 − t) on every flow model.
#
# ComfyUI samplers that apply k-diffusion's plain rule to ComfyUI's raw flow coordinates (x_t, σ = t, λ = −log t):
# the adapter runs the registry sampler on ComfyUI's model and sigmas unchanged there, as on other models.
COMFYUI_FLOW_RAW: frozenset[str] = frozenset({
    "euler", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2m", "ddpm", "ipndm", "ipndm_v",
    "deis", "sample_ipndm", "sample_ipndm_v", "sample_deis", "res_multistep", "res_multistep_ancestral",
    "gradient_estimation", "ddim",
    "uni_pc", "uni_pc_bh2",
})
# ComfyUI samplers that write into the caller's SIGMAS: sample_unipc replaces a final 0 by 0.001 in place
# (``timesteps = sigmas[:]; timesteps[-1] = 0.001``, a view), so KSAMPLER's ``inverse_noise_scaling(sigmas[-1], x)``
# divides a flow model's result by 1 − 0.001 (CONST's ``latent / (1.0 - sigma)``; the identity on other models). The
# adapter divides by it itself (the caller's SIGMAS stay as they are): the final σ written, by ComfyUI name.
COMFYUI_FLOW_FINAL_WRITE: dict[str, float] = {"uni_pc": 0.001, "uni_pc_bh2": 0.001}
# ComfyUI samplers that step in the model's half-log-SNR λ = log((1 − t)/t) (sigma_to_half_log_snr): the adapter runs
# them in σ = t/(1 − t), x/(1 − t), where λ = −log σ, after ComfyUI's offset_first_sigma_for_snr (a first t ≥ 1
# becomes model_sampling.percent_to_sigma(1e-4)); sa_solver's SDE interval is ComfyUI's, percent_to_sigma(0.2) to
# percent_to_sigma(0.8). (lcm re-noises with the model's noise_scaling, which σ = t/(1 − t) reproduces as it is.)
COMFYUI_FLOW_SNR: frozenset[str] = frozenset({
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
    "exp_heun_2_x0", "exp_heun_2_x0_sde",
})
# ComfyUI samplers that run another update rule on flow models: the registry sampler the ComfyUI name runs there
# instead.
COMFYUI_FLOW: dict[str, str] = {
    "euler_ancestral": "euler_ancestral_rf",  # sample_euler_ancestral → sample_euler_ancestral_RF
}
# ComfyUI samplers whose fresh noise ComfyUI multiplies by the model's ``model_sampling.noise_scale`` (the
# sampling_settings of its video models; 02159d81): the functions that set ``s_noise = s_noise *
# getattr(model_sampling, "noise_scale", 1.0)`` — dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde (their _heun / _gpu forms
# call them), res_multistep_ancestral, er_sde, seeds_2 (so exp_heun_2_x0 / _sde), seeds_3, sa_solver (/ _pece) — on
# every model; on flow models (a CONST) also the *_RF ancestral functions the ancestral names switch to, and lcm,
# which re-noises through CONST.noise_scaling (``sigma * (noise_scale * noise) + (1 - sigma) * latent``). The rest
# never read it: sample_ddpm (generic_step_sampler), the DPMSolver (dpm_fast / dpm_adaptive), the churn of euler /
# heun / dpm_2 / heunpp2, and the ancestral functions on other models (res_multistep reads it at η = 0, where it
# draws nothing it keeps). The ComfyUI adapter does not scale noise by it: it refuses these names on such a model
# where they draw (η and s_noise not 0), and runs every other ComfyUI name as ComfyUI does, unscaled.
COMFYUI_NOISE_SCALED: frozenset[str] = frozenset({
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "res_multistep_ancestral", "er_sde", "seeds_2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "seeds_3", "sa_solver", "sa_solver_pece",
})
COMFYUI_NOISE_SCALED_ON_FLOW: frozenset[str] = frozenset({
    "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "lcm"})
# ComfyUI samplers whose flow-model rule this library does not provide: refused on flow models, and why.
COMFYUI_FLOW_REFUSED: dict[str, str] = {
    **{name: f"on flow models ComfyUI runs sample_{name}_RF (its ancestral split in flow time), which is not "
             f"implemented; use euler_ancestral, or the registry's {name} (without the comfyui: prefix) for its own "
             f"rule"
       for name in ("dpm_2_ancestral", "dpmpp_2s_ancestral")},
}
# ComfyUI samplers this library does not provide, and why (refused by name, never replaced by something else).
COMFYUI_REFUSED: dict[str, str] = {
    **{f"{base}_cfg_pp": "CFG++ (Chung et al. 2024, arXiv:2406.08070) steps with the unconditional prediction, which "
                         "a guided denoiser does not expose to the sampler; use the sampler without _cfg_pp (with a "
                         "lower CFG scale) instead"
       for base in ("euler", "euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m", "res_multistep",
                    "res_multistep_ancestral", "gradient_estimation")},
    "cfgpp_ud10_ab": "a CFG++ sampler (Chung et al. 2024, arXiv:2406.08070): it steps with the unconditional "
                     "prediction, which a guided denoiser does not expose to the sampler; use a sampler without CFG++ "
                     "(with a lower CFG scale) instead",
}

# Schedules by the names the tools give them: ComfyUI's `scheduler` values and A1111 1.9+'s "Schedule type" menu.
# (ComfyUI's "beta" is the Beta distribution over the training timesteps: the registry's ``beta_timesteps``.)
# Both tools' DDIM spacing keeps its stride ⌊N/n⌋ to the table's end (more than n steps when n does not divide N).
# A ComfyUI entry is (schedule, options, the options added on a flow model). On a flow model (ModelSamplingDiscreteFlow
# / ModelSamplingFlux: SD3, Flux) ComfyUI's σ is the flow time t (comfy/samplers.py calculate_sigmas, Comfy-Org/ComfyUI
# 311c0140): its table schedules read the model's shifted flow table, which RectifiedFlow.sigmas is, and its karras,
# exponential and kl_optimal take sigma_min / sigma_max = that table's ends in t, so they run in flow time there. On a
# continuous EDM model (ModelSamplingContinuousEDM: a VE) its table schedules read the 1000-entry log-uniform table it
# builds from σ_min to σ_max (VE.sigmas) and its time ¼·ln σ; the others take the model's ends, as on any model.
IN_FLOW_TIME = {"in_flow_time": True}
COMFYUI_SCHEDULERS: dict[str, tuple[str, dict, dict]] = {
    "simple": ("simple", {}, {}), "sgm_uniform": ("sgm_uniform", {}, {}), "karras": ("karras", {}, IN_FLOW_TIME),
    "exponential": ("exponential", {}, IN_FLOW_TIME), "ddim_uniform": ("ddim_uniform", {"keep_stepping": True}, {}),
    "beta": ("beta_timesteps", {}, {}), "normal": ("normal", {}, {}), "linear_quadratic": ("linear_quadratic", {"sigma_fraction": True}, {}),
    "kl_optimal": ("kl_optimal", {}, IN_FLOW_TIME),
    # ComfyUI's AlignYourStepsScheduler node (its model_type SD1 / SDXL / SVD; comfy_extras/nodes_align_your_steps.py):
    # its own 10-decimal levels, not the 3-decimal ones A1111 and diffusers ship (the registry's default)
    "AlignYourStepsScheduler SD1": ("ays_sd15", {"levels": "comfyui"}, {}),
    "AlignYourStepsScheduler SDXL": ("ays_sdxl", {"levels": "comfyui"}, {}),
    "AlignYourStepsScheduler SVD": ("ays_svd", {"levels": "comfyui"}, {}),
}
# Zero-terminal-SNR models (ᾱ_T = 0, σ_max = inf here, as in diffusers' rescale_betas_zero_snr): ComfyUI
# (comfy/model_sampling.py rescale_zero_terminal_snr_sigmas, which ModelSamplingDiscrete(zsnr=True) and the
# ModelSamplingDiscrete node's zsnr option apply; Comfy-Org/ComfyUI 2fd20839) and A1111 (modules/sd_models.py
# rescale_zero_terminal_snr_abar, its "Zero Terminal SNR" noise schedule and ztsnr models) both rescale ᾱ as Lin et
# al. do, then set alphas_cumprod[-1] to this value, so their σ table ends at a finite σ_max = sqrt((1 − ᾱ)/ᾱ) ≈
# 4518.76 (ComfyUI's table is float32 from float64; A1111's ᾱ and σ are float32). Every ComfyUI / A1111 schedule reads
# that table: its σ_max (karras, exponential, kl_optimal, linear_quadratic, A1111's Beta and Polyexponential) and its
# entries (simple, normal, sgm_uniform, ddim_uniform, beta, A1111's Uniform). On a zero-SNR model the tools' schedule
# names resolve with terminal_alpha_bar=TOOLS_ZERO_SNR_ALPHA_BAR (samplers.core.names.resolve_schedule): the schedule
# on VPDiscrete.with_terminal_alpha_bar, the model as the tools read it.
TOOLS_ZERO_SNR_ALPHA_BAR = 4.8973451890853435e-08
# A1111 (modules/sd_schedulers.py): its "Beta" is the Beta quantiles in σ (α = β = 0.6, its defaults), its "KL
# Optimal" n + 1 levels down to σ_min with no 0, its "Align Your Steps" the SD 1.5 levels interpolated to n and a 0
# appended (A1111 takes the SDXL levels on an SDXL model: pass "ays_sdxl" with append_zero=True there).
A1111_SCHEDULERS: dict[str, tuple[str, dict]] = {
    "Uniform": ("linspace", {}),  # k-diffusion's DiscreteSchedule.get_sigmas: evenly spaced training timesteps
    "Karras": ("karras", {}), "Exponential": ("exponential", {}), "Polyexponential": ("polyexponential", {}),
    "SGM Uniform": ("sgm_uniform", {}), "KL Optimal": ("kl_optimal", {"end": "sigma_min"}),
    "Align Your Steps": ("ays_sd15", {"append_zero": True}), "Simple": ("simple", {}), "Normal": ("normal", {}),
    "DDIM": ("ddim_uniform", {"keep_stepping": True}), "Beta": ("beta_sigmas", {}),
    # Forge / reForge (modules/sd_schedulers.py turbo_scheduler): round(k·1000/n − 1), k = n … 1, in float32, read from
    # the model's table. Forge reads it from its own σ table (float64 ᾱ rounded to float32 σ); the name builds on
    # A1111's float32 ᾱ as the other types do, which agrees with Forge's to 7.2e-7 relative (SD 1.x / SDXL, n ≤ 50; 1.6e-6 to n = 150).
    "Turbo": ("forge_turbo", {}),
    # reForge's "Align Your Steps GITS" / "11" / "32": A1111's rule on their own levels; the names take the SD 1.5
    # lists, as "Align Your Steps" does (reForge takes the SDXL ones on an SDXL model: ays_gits_sdxl, ays_sdxl,
    # ays_32_sdxl with append_zero=True). "11" ships the same levels as "Align Your Steps".
    "Align Your Steps GITS": ("ays_gits_sd15", {"append_zero": True}),
    "Align Your Steps 11": ("ays_sd15", {"append_zero": True}),
    "Align Your Steps 32": ("ays_32_sd15", {"append_zero": True}),
}

# Not Schedule types of A1111's menu but schedules its labels run, named by them ("<label>": (schedule, options, the
# labels)): "Timesteps", the timesteps its timestep samplers step whatever the type (DDIM, PLMS;
# modules/sd_samplers_timesteps.py get_timesteps), ending at timestep 1 without a 0; "LCM", its LCM's Automatic
# schedule (modules/sd_samplers_lcm.py LCMCompVisDenoiser.get_sigmas: evenly spaced over LCM's 50 timesteps of the
# model's alphas_cumprod). Resolved with the "a1111:" prefix as its types are: on a discrete model A1111's float32
# table, on a zero-terminal-SNR one with its terminal ᾱ (LCM's top timestep at σ ≈ 4518.76, not inf).
A1111_LABEL_SCHEDULES: dict[str, tuple[str, dict, str]] = {"Timesteps": ("a1111_timesteps", {}, "DDIM / PLMS"),
                                                           "LCM": ("lcm_uniform", {}, "LCM")}

# diffusers scheduler classes: the registry sampler that runs the same algorithm with that class's default config.
# The diffusers shim refines this from the rest of the config (solver_order, algorithm_type, skip_prk_steps, ...).
DIFFUSERS: dict[str, tuple] = {
    "DDIMScheduler": ("ddim", {}, None, None),
    "DDPMScheduler": ("ddpm", {}, None, None),
    "PNDMScheduler": ("pndm", {}, None, None),
    "IPNDMScheduler": ("ipndm", {}, None, None),
    "LMSDiscreteScheduler": ("lms", {}, None, None),
    "EulerDiscreteScheduler": ("euler", {}, None, None),
    "EulerAncestralDiscreteScheduler": ("euler_ancestral", {}, None, None),
    "HeunDiscreteScheduler": ("heun", {}, None, None),
    "KDPM2DiscreteScheduler": ("dpm_2", {}, None, None),
    "KDPM2AncestralDiscreteScheduler": ("dpm_2_ancestral", {}, None, None),
    "DPMSolverMultistepScheduler": ("dpmpp_2m", {}, None, None),
    "DPMSolverSinglestepScheduler": ("dpmpp_2s", {}, None, None),
    "DPMSolverSDEScheduler": ("dpmpp_sde", {}, None, None),
    "UniPCMultistepScheduler": ("unipc_bh2", {"order": 2}, None, None),
    "DEISMultistepScheduler": ("deis", {"order": 2}, None, None),
    "LCMScheduler": ("lcm", {}, None, None),
    "TCDScheduler": ("tcd", {}, None, None),
    "EDMEulerScheduler": ("euler", {}, None, None),
    "EDMDPMSolverMultistepScheduler": ("dpmpp_2m", {}, None, None),
    # a label implies no schedule options, so not diffusers' flow grid: pass schedule="flow" with end="diffusers"
    # for the class's own σ (the diffusers shim builds that grid from the config itself)
    "FlowMatchEulerDiscreteScheduler": ("euler", {}, None, None),
    "FlowMatchHeunDiscreteScheduler": ("heun_flow", {}, None, None),
}

# diffusers class names that no registry sampler runs as that class's default config does, as a name alone
DIFFUSERS_REFUSED: dict[str, str] = {
    "SASolverScheduler": "its default τ is 1 for the timesteps 200-800 and 0 elsewhere, a function of the model's "
                         "timesteps that a name alone does not know, with predictor and corrector order 2 and a "
                         "lower order at the end; use SamplerScheduler.from_config(<its config>) (which reads τ from "
                         "the config's timesteps), or 'sa_solver' with the options you want",
}
