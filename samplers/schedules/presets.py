"""Published step lists as data: Align Your Steps (Sabour et al. 2024, arXiv:2404.14507), resampled to any
step count linearly in log σ."""
from __future__ import annotations

import numpy as np
import torch

from .base import check_steps, register, strictly_decreasing
from ..core.validate import boolean

AYS_PRESETS: dict[str, list[float]] = {
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
    "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}

def loglinear_interp(levels: list[float], count: int) -> torch.Tensor:
    """Resample a decreasing list of noise levels to ``count`` values, linearly in log σ (the AYS paper's rule)."""
    xs = np.linspace(0, 1, len(levels))
    ys = np.log(np.asarray(levels, dtype=np.float64)[::-1])
    out = np.exp(np.interp(np.linspace(0, 1, count), xs, ys))[::-1].copy()
    return torch.as_tensor(out, dtype=torch.float64)

def _ays(preset: str):
    def schedule(n: int, sigma_min=None, sigma_max=None, append_zero: bool = False) -> torch.Tensor:
        check_steps(n, None, None, need_range=False)
        boolean("append_zero", append_zero)
        levels = AYS_PRESETS[preset]
        if append_zero:  # A1111's: n levels (the published 11 at n = 11), then 0
            top = torch.tensor(levels, dtype=torch.float64) if n == len(levels) else loglinear_interp(levels, n)
            return strictly_decreasing(torch.cat([top, torch.zeros(1, dtype=torch.float64)]), f"ays_{preset}")
        sigmas = torch.tensor(levels, dtype=torch.float64) if n + 1 == len(levels) else loglinear_interp(levels, n + 1)
        sigmas[-1] = 0.0
        return strictly_decreasing(sigmas, f"ays_{preset}")

    schedule.__name__ = f"ays_{preset}"
    schedule.__doc__ = (f"Align Your Steps preset for {preset.upper()} (Sabour et al. 2024): the published 10-step "
                        "levels, log-linearly interpolated to n + 1 values, the last set to 0 (ComfyUI's node, the "
                        "paper's how-to); ``append_zero=True``: to n levels, then 0 (A1111's \"Align Your Steps\"). "
                        "The model's own σ range is not used; an explicit sigma_min / sigma_max without native= is "
                        "refused (it would be ignored).")
    return schedule

for _name, _aliases in (("sd15", ("AYS SD1.5", "ays_sd1.5", "AYS")), ("sdxl", ("AYS SDXL",)), ("svd", ("AYS SVD",))):
    _levels = AYS_PRESETS[_name]
    register(f"ays_{_name}", aliases=_aliases,
             preset=f"the published Align Your Steps levels ({_levels[0]:g} … {_levels[-1]:g}), not a range"
             )(_ays(_name))
