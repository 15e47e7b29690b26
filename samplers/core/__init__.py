"""The core every sampler stands on: nothing here knows a particular sampler.

- ``registry``: samplers and schedules by name, with metadata (``register``, ``get``, ``info``, ``available``);
- ``run``: the one boundary every sampler call goes through (validation, float32 state, the exact step from
  σ = inf, the no-host-sync loop helpers ``progress`` / ``report``);
- ``steps``: pieces of a step shared by several samplers (PF-ODE slope, ancestral split, EDM churn, the
  exponential-integrator helpers λ, φ1, φ2);
- ``conversion``: prediction types and ``to_denoiser`` (eps / x0 / v / flow / score / EDM → D(x, σ));
- ``native``: native noise schedules of trained models (VP discrete / continuous, VE, rectified flow);
- ``seeds``, ``noise``, ``brownian``: per-item seeding and the noise samplers;
- ``errors``: the exception hierarchy; ``files``: atomic file writes; ``budget``: counting model calls;
- ``graph``: CUDA-graph capture of a whole run.
"""
