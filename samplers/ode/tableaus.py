"""Explicit Runge-Kutta methods as data: Butcher tableaux in one convention (c, A, b).

``A`` is strictly lower-triangular (row i holds a_i1..a_i,i-1), ``c_i = Σ_j a_ij``, ``Σ b = 1``. Adding a
method is adding a row here; :mod:`samplers.ode.runge_kutta` registers each one as a sampler by its name.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F


@dataclass(frozen=True)
class Tableau:
    name: str
    order: int
    c: tuple
    a: tuple  # a[i] = coefficients of stages 0..i-1 for stage i
    b: tuple
    aliases: tuple = ()
    ref: str = ""

    @property
    def stages(self) -> int:
        return len(self.b)


TABLEAUS = {t.name: t for t in [
    Tableau("rk_euler", 1, (0,), ((),), (1,), ref="Euler (1768)"),
    Tableau("midpoint", 2, (0, F(1, 2)), ((), (F(1, 2),)), (0, 1), aliases=("rk_midpoint",),
            ref="explicit midpoint rule (Runge 1895)"),
    Tableau("rk_heun", 2, (0, 1), ((), (1,)), (F(1, 2), F(1, 2)), aliases=("heun2",),
            ref="Heun's method (Heun 1900); the table behind `heun`"),
    Tableau("ralston", 2, (0, F(2, 3)), ((), (F(2, 3),)), (F(1, 4), F(3, 4)), aliases=("rk_ralston",),
            ref="Ralston (1962), minimum error bound second order"),
    Tableau("kutta3", 3, (0, F(1, 2), 1), ((), (F(1, 2),), (-1, 2)), (F(1, 6), F(2, 3), F(1, 6)),
            aliases=("rk3", "kutta"), ref="Kutta's third-order method (Kutta 1901)"),
    Tableau("heun3", 3, (0, F(1, 3), F(2, 3)), ((), (F(1, 3),), (0, F(2, 3))), (F(1, 4), 0, F(3, 4)),
            ref="Heun's third-order method (Heun 1900)"),
    Tableau("ralston3", 3, (0, F(1, 2), F(3, 4)), ((), (F(1, 2),), (0, F(3, 4))), (F(2, 9), F(1, 3), F(4, 9)),
            aliases=("bosh3", "bogacki_shampine"),
            ref="Ralston (1962), third order; also the 3rd-order solution of Bogacki & Shampine (1989)"),
    Tableau("ssprk3", 3, (0, 1, F(1, 2)), ((), (1,), (F(1, 4), F(1, 4))), (F(1, 6), F(1, 6), F(2, 3)),
            aliases=("shu_osher",), ref="Shu & Osher (1988), strong-stability-preserving RK3"),
    Tableau("rk4", 4, (0, F(1, 2), F(1, 2), 1), ((), (F(1, 2),), (0, F(1, 2)), (0, 0, 1)),
            (F(1, 6), F(1, 3), F(1, 3), F(1, 6)), aliases=("classic_rk4",), ref="classical Runge-Kutta (Kutta 1901)"),
    Tableau("rk38", 4, (0, F(1, 3), F(2, 3), 1), ((), (F(1, 3),), (F(-1, 3), 1), (1, -1, 1)),
            (F(1, 8), F(3, 8), F(3, 8), F(1, 8)), aliases=("3/8", "rk4_38"), ref="Kutta's 3/8 rule (Kutta 1901)"),
    Tableau("ralston4", 4, (0, 0.4, 0.45573725, 1),
            ((), (0.4,), (0.29697761, 0.15875964), (0.21810040, -3.05096516, 3.83286476)),
            (0.17476028, -0.55148066, 1.20553560, 0.17118478),
            ref="Ralston (1962), minimum truncation error fourth order (8-digit coefficients)"),
]}
