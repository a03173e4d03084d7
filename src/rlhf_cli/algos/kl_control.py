"""KL coefficient controllers for KL-shaped rewards (``ppo.shaped_rewards``).

``KL_CONTROLLERS`` maps ``fixed | adaptive`` to a class built with
``(init_kl_coef, target_kl=None, horizon=None)``; ``build_kl_controller`` does that with checks.
Both expose ``kl_coef`` (the current beta), ``update(current_kl, n_steps) -> kl_coef`` and a
JSON-serialisable ``state_dict()`` / ``load_state_dict()`` (plain floats) for exact resume.

Protocol per PPO step: shape the rewards with ``ctl.kl_coef``, then call
``ctl.update(kl, n_steps)`` with the KL the rollout actually reached (mean over sequences of the
SUM over tokens of the per-token KL, the unit of ``target_kl``) and ``n_steps`` = the number of
sequences of the step over all ranks; the new value shapes the NEXT step.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

from rlhf_cli.registry import Registry

KL_CONTROLLERS = Registry("kl controller")
# Ziegler et al. 2019, eq. 2.2: the proportional error is clipped to +-0.2.
ERROR_CLIP = 0.2


def _finite_nonneg(name: str, v: float) -> float:
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


class _KLController:
    name = ""

    def __init__(self, init_kl_coef: float):
        self.kl_coef = _finite_nonneg("init_kl_coef", init_kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """``{'controller': name, 'kl_coef': float}``: everything needed to resume exactly."""
        return {"controller": self.name, "kl_coef": float(self.kl_coef)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore ``kl_coef``; a state saved by another controller kind is an error."""
        if state.get("controller") != self.name:
            raise ValueError(f"KL controller state is for {state.get('controller')!r}, not {self.name!r}")
        self.kl_coef = _finite_nonneg("kl_coef", state["kl_coef"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kl_coef={self.kl_coef})"


@KL_CONTROLLERS.register("fixed")
class FixedKLController(_KLController):
    """Constant beta (InstructGPT: beta = 0.02; Ouyang et al. 2022, Appendix C.4)."""

    name = "fixed"

    def __init__(self, init_kl_coef: float, target_kl: Optional[float] = None, horizon: Optional[float] = None):
        super().__init__(init_kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No change; returns ``kl_coef``."""
        return self.kl_coef


@KL_CONTROLLERS.register("adaptive")
class AdaptiveKLController(_KLController):
    """Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", §2.2: a
    proportional controller steering the KL to ``target_kl``:

    ``e = clip(KL / target_kl - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n_steps / horizon)``

    (their ``K_beta = 0.1`` per batch corresponds to ``n_steps / horizon``; the reference code,
    OpenAI lm-human-preferences, uses ``horizon = 10000`` and ``n_steps`` = batch size).

    beta stays > 0 only while one update changes it by less than itself: ``0.2 * n_steps / horizon < 1``,
    i.e. ``horizon > 0.2 * n_steps`` (``check_batch``; with ``n_steps / horizon > 5`` a KL below target
    would make beta negative, rewarding divergence). ``update`` refuses a batch that breaks this rather
    than return a beta <= 0, and ``init_kl_coef`` must be > 0 (0 is a fixed point of the product).
    """

    name = "adaptive"

    def __init__(self, init_kl_coef: float, target_kl: Optional[float] = None, horizon: Optional[float] = None):
        super().__init__(init_kl_coef)
        if target_kl is None or not float(target_kl) > 0 or not math.isfinite(float(target_kl)):
            raise ValueError(f"the adaptive KL controller needs target_kl > 0, got {target_kl}")
        if horizon is None or not float(horizon) > 0 or not math.isfinite(float(horizon)):
            raise ValueError(f"the adaptive KL controller needs horizon > 0, got {horizon}")
        if not self.kl_coef > 0:
            raise ValueError(f"the adaptive KL controller needs init_kl_coef > 0 (0 never changes), got {init_kl_coef}")
        self.target_kl = float(target_kl)
        self.horizon = float(horizon)

    def max_change(self, n_steps: int) -> float:
        """The largest relative change of beta in one update of ``n_steps`` samples: ``0.2 n / horizon``."""
        return ERROR_CLIP * float(n_steps) / self.horizon

    def check_batch(self, n_steps: int) -> None:
        """ValueError unless one update of ``n_steps`` samples keeps beta > 0 (``max_change < 1``)."""
        if not self.max_change(n_steps) < 1.0:
            raise ValueError(f"kl_horizon={self.horizon:g} is too small for {n_steps} samples per update: "
                             f"beta could change by {self.max_change(n_steps):.0%} of itself in one step and turn "
                             f"negative; use kl_horizon > {ERROR_CLIP * n_steps:g} (0.2 x samples per update)")

    def update(self, current_kl: float, n_steps: int) -> float:
        """One controller step from the KL reached over ``n_steps`` sequences; returns the new beta.
        A non-finite ``current_kl`` leaves beta unchanged (never poison the coefficient)."""
        kl = float(current_kl)
        if not math.isfinite(kl):
            return self.kl_coef
        self.check_batch(n_steps)
        error = min(max(kl / self.target_kl - 1.0, -ERROR_CLIP), ERROR_CLIP)
        self.kl_coef = self.kl_coef * (1.0 + error * float(n_steps) / self.horizon)
        return self.kl_coef


def build_kl_controller(name: str, init_kl_coef: float, target_kl: Optional[float] = None,
                        horizon: Optional[float] = None) -> _KLController:
    """``KL_CONTROLLERS.get(name)(init_kl_coef, target_kl, horizon)``; unknown names raise
    ``UnknownNameError`` with the closest choice, bad numbers ``ValueError``."""
    return KL_CONTROLLERS.get(name)(init_kl_coef, target_kl=target_kl, horizon=horizon)
