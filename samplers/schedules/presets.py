"""Published step lists as data: Align Your Steps (Sabour et al. 2024, arXiv:2404.14507), resampled to any
step count linearly in log σ."""
from __future__ import annotations

import numpy as np
import torch

from .base import check_steps, register, strictly_decreasing
from ..core.errors import InvalidOption
from ..core.validate import boolean

# The levels A1111 ("Align Your Steps", modules/sd_schedulers.py) and diffusers (schedulers.scheduling_utils.
# AysSchedules) ship: the paper's how-to rounded to 3 decimals. The registry's default (published tables use them).
AYS_PRESETS: dict[str, list[float]] = {
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
    "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}
# ComfyUI's AlignYourStepsScheduler node (comfy_extras/nodes_align_your_steps.py NOISE_LEVELS, comfyanonymous/ComfyUI
# 341667c4): the same levels to 10 decimals for SD1 / SDXL (its ends are SD 1.5's own table ends), SVD's as above.
AYS_COMFYUI: dict[str, list[float]] = {
    "sd15": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
             0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "sdxl": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}
AYS_LEVELS = {"rounded": AYS_PRESETS, "comfyui": AYS_COMFYUI}


def loglinear_interp(levels: list[float], count: int) -> torch.Tensor:
    """Resample a decreasing list of noise levels to ``count`` values, linearly in log σ (the AYS paper's rule)."""
    xs = np.linspace(0, 1, len(levels))
    ys = np.log(np.asarray(levels, dtype=np.float64)[::-1])
    out = np.exp(np.interp(np.linspace(0, 1, count), xs, ys))[::-1].copy()
    return torch.as_tensor(out, dtype=torch.float64)

def _levels(preset: str, levels: str) -> list[float]:
    if not isinstance(levels, str) or levels not in AYS_LEVELS:
        raise InvalidOption(f"schedule 'ays_{preset}' has no levels={levels!r}; use levels='rounded' (A1111's and "
                            "diffusers' 3-decimal levels, the default) or levels='comfyui' (ComfyUI's "
                            "AlignYourStepsScheduler node, 10 decimals)")
    return AYS_LEVELS[levels][preset]

def _from_levels(data: list[float], n: int, append_zero: bool, name: str) -> torch.Tensor:
    """``data`` resampled to n levels then 0 (``append_zero``: A1111's / reForge's rule, the list itself at n =
    len(data)), or to n + 1 levels the last set to 0 (the paper's how-to, the list itself at n + 1 = len(data))."""
    if append_zero:  # A1111's: n levels (the published 11 at n = 11), then 0
        top = torch.tensor(data, dtype=torch.float64) if n == len(data) else loglinear_interp(data, n)
        return strictly_decreasing(torch.cat([top, torch.zeros(1, dtype=torch.float64)]), name)
    sigmas = torch.tensor(data, dtype=torch.float64) if n + 1 == len(data) else loglinear_interp(data, n + 1)
    sigmas[-1] = 0.0
    return strictly_decreasing(sigmas, name)

def _ays(preset: str):
    def schedule(n: int, sigma_min=None, sigma_max=None, append_zero: bool = False,
                 levels: str = "rounded") -> torch.Tensor:
        check_steps(n, None, None, need_range=False)
        append_zero = boolean("append_zero", append_zero)
        return _from_levels(_levels(preset, levels), n, append_zero, f"ays_{preset}")

    def ends(levels: str = "rounded") -> tuple[float, float]:
        """(sigma_min, sigma_max) of the levels: the only range get_sigmas accepts for the preset."""
        data = _levels(preset, levels)
        return data[-1], data[0]

    schedule.__name__ = f"ays_{preset}"
    schedule.__doc__ = (f"Align Your Steps preset for {preset.upper()} (Sabour et al. 2024): the published 10-step "
                        "levels, log-linearly interpolated to n + 1 values, the last set to 0 (the paper's how-to "
                        "and ComfyUI's AlignYourStepsScheduler node at denoise = 1); ``append_zero=True``: to n "
                        "levels, then 0 (A1111's \"Align Your Steps\"). ``levels=\"rounded\"`` (default): the levels "
                        "to 3 decimals, as A1111 and diffusers (``AysSchedules``) ship them; ``levels=\"comfyui\"``: "
                        "ComfyUI's node's 10-decimal levels (the ComfyUI names \"AlignYourStepsScheduler SD1\" / "
                        "\"SDXL\" / \"SVD\" pass it; SVD's levels are the same in both). ComfyUI's denoise < 1 (the "
                        "schedule's last steps) is not part of it. The model's own σ range is not used: an explicit "
                        "sigma_min / sigma_max other than the levels' own ends (or, with native=, the model's own) is refused, with or without native= "
                        "(it would be ignored).")
    schedule.ends = ends
    return schedule

for _name, _aliases in (("sd15", ("AYS SD1.5", "ays_sd1.5", "AYS")), ("sdxl", ("AYS SDXL",)), ("svd", ("AYS SVD",))):
    _data = AYS_PRESETS[_name]
    register(f"ays_{_name}", aliases=_aliases,
             preset=f"the published Align Your Steps levels ({_data[0]:g} … {_data[-1]:g}), not a range"
             )(_ays(_name))


# reForge's further Align Your Steps types (Panchovix/stable-diffusion-webui-reForge modules/sd_schedulers.py:
# "Align Your Steps GITS" get_align_your_steps_sigmas_GITS, "Align Your Steps 32" ays_32_sigmas; its "Align Your
# Steps 11" takes the levels above), each with an SD 1.5 and an SDXL list (the tool takes the SDXL one where
# shared.sd_model.is_sdxl), its numbers as the tool ships them.
AYS_GITS: dict[str, list[float]] = {
    "sd15": [14.615, 4.617, 2.507, 1.236, 0.702, 0.402, 0.240, 0.156, 0.104, 0.094, 0.029],
    "sdxl": [14.615, 4.734, 2.567, 1.529, 0.987, 0.652, 0.418, 0.268, 0.179, 0.127, 0.029],
}
AYS_32: dict[str, list[float]] = {
    "sd15": [14.615, 11.23951352, 8.64363081, 6.64729424, 5.57250862, 4.71648546, 3.99196065, 3.5195609,
             3.13490466, 2.79228788, 2.48773628, 2.21663865, 1.97508351, 1.7793172, 1.61475335, 1.46540953,
             1.314849, 1.16642497, 1.03475547, 0.91573744, 0.80748169, 0.71202361, 0.621739, 0.53065202,
             0.4529096, 0.37491455, 0.27461819, 0.2011529, 0.14105873, 0.06682881, 0.03166121, 0.015],
    "sdxl": [14.615, 11.1491618, 8.50522127, 6.48827151, 5.43707402, 4.60398619, 3.89854704, 3.27407457,
             2.74396527, 2.29968659, 1.95448514, 1.67108715, 1.42878152, 1.23181009, 1.06789649, 0.92579443,
             0.80290886, 0.69660121, 0.60436903, 0.52852552, 0.46773344, 0.41393379, 0.36258186, 0.31008517,
             0.26518925, 0.22326461, 0.17653877, 0.13959192, 0.10587381, 0.05519369, 0.02877334, 0.015],
}


def _reforge(name: str, data: list[float], what: str, model: str):
    def schedule(n: int, sigma_min=None, sigma_max=None, append_zero: bool = False) -> torch.Tensor:
        check_steps(n, None, None, need_range=False)
        append_zero = boolean("append_zero", append_zero)
        return _from_levels(data, n, append_zero, name)

    def ends() -> tuple[float, float]:
        """(sigma_min, sigma_max) of the levels: the only range get_sigmas accepts for the preset."""
        return data[-1], data[0]

    schedule.__name__ = name
    schedule.__doc__ = (f"reForge's {what} levels for {model} ({len(data)} levels, {data[0]:g} … {data[-1]:g}), "
                        f"log-linearly interpolated to n + 1 values, the last set to 0 (the ``ays_*`` presets' "
                        f"default rule, which no tool runs on these lists); ``append_zero=True``: to n levels, then 0 "
                        f"(reForge's rule: its \"{what}\" Schedule type, the name "
                        f"of which gives the SD 1.5 list; reForge takes the SDXL list on an SDXL model). The "
                        "model's own σ range is not used: an explicit sigma_min / sigma_max other than the levels' "
                        "own ends (or, with native=, the model's own) is refused.")
    schedule.ends = ends
    return schedule

for _what, _key, _sets in (("Align Your Steps GITS", "gits", AYS_GITS), ("Align Your Steps 32", "32", AYS_32)):
    for _model, _label in (("sd15", "SD 1.5"), ("sdxl", "SDXL")):
        _data = _sets[_model]
        register(f"ays_{_key}_{_model}",
                 preset=f"reForge's {_what} levels ({_data[0]:g} … {_data[-1]:g}), not a range"
                 )(_reforge(f"ays_{_key}_{_model}", _data, _what, _label))
