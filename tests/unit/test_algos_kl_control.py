"""Adaptive (Ziegler et al. 2019 §2.2) and fixed KL controllers, hand-worked."""
import json

import pytest

from rlhf_cli.algos.kl_control import (
    KL_CONTROLLERS,
    AdaptiveKLController,
    FixedKLController,
    build_kl_controller,
)
from rlhf_cli.registry import UnknownNameError


def test_adaptive_hand_values():
    ctl = AdaptiveKLController(0.1, target_kl=6.0, horizon=10000)
    # KL 9: e = clip(9/6 - 1 = .5, -.2, .2) = .2 ; beta = .1 * (1 + .2 * 256 / 10000) = .1 * 1.00512 = .100512
    assert ctl.update(9.0, 256) == pytest.approx(0.100512, abs=1e-15)
    # KL 5.4: e = .9 - 1 = -.1 ; beta = .100512 * (1 - .1 * .0256) = .100512 * .99744 = .10025468928
    assert ctl.update(5.4, 256) == pytest.approx(0.10025468928, abs=1e-15)
    # KL 0: e = -1 -> -.2 ; beta = .10025468928 * (1 - .00512) = .10025468928 * .99488 = .0997413852...
    assert ctl.update(0.0, 256) == pytest.approx(0.10025468928 * 0.99488, abs=1e-15)
    # KL exactly on target: no change ; a non-finite KL never poisons beta
    before = ctl.kl_coef
    assert ctl.update(6.0, 256) == before
    assert ctl.update(float("nan"), 256) == before
    assert ctl.kl_coef == before


def test_adaptive_reaches_target_direction():
    # beta grows while the KL is above target and shrinks while below
    ctl = AdaptiveKLController(0.05, target_kl=1.0, horizon=100)
    assert ctl.update(3.0, 10) > 0.05  # 0.05 * 1.02
    high = ctl.kl_coef
    assert ctl.update(0.5, 10) < high


def test_fixed_and_registry():
    ctl = FixedKLController(0.02)
    assert ctl.update(100.0, 512) == 0.02 and ctl.kl_coef == 0.02
    assert KL_CONTROLLERS.names() == ["adaptive", "fixed"]
    assert isinstance(build_kl_controller("fixed", 0.02, target_kl=None), FixedKLController)
    ada = build_kl_controller("adaptive", 0.02, target_kl=6.0, horizon=10000)
    assert isinstance(ada, AdaptiveKLController) and ada.kl_coef == 0.02
    with pytest.raises(UnknownNameError, match="did you mean 'adaptive'"):
        build_kl_controller("adaptiv", 0.02)
    with pytest.raises(ValueError, match="target_kl"):
        build_kl_controller("adaptive", 0.02, horizon=10000)
    with pytest.raises(ValueError, match="horizon"):
        build_kl_controller("adaptive", 0.02, target_kl=6.0, horizon=0)
    with pytest.raises(ValueError, match="init_kl_coef"):
        build_kl_controller("fixed", -1.0)


def test_state_dict_resume_is_exact():
    kls = [9.0, 5.4, 7.3, 0.1, 6.6, 11.0]
    full = AdaptiveKLController(0.1, target_kl=6.0, horizon=10000)
    trace = [full.update(k, 64) for k in kls]
    part = AdaptiveKLController(0.1, target_kl=6.0, horizon=10000)
    for k in kls[:3]:
        part.update(k, 64)
    state = json.loads(json.dumps(part.state_dict()))  # plain floats survive JSON exactly
    assert state == {"controller": "adaptive", "kl_coef": trace[2]}
    resumed = AdaptiveKLController(0.1, target_kl=6.0, horizon=10000)
    resumed.load_state_dict(state)
    assert [resumed.update(k, 64) for k in kls[3:]] == trace[3:]  # bitwise
    with pytest.raises(ValueError, match="'adaptive', not 'fixed'"):
        FixedKLController(0.1).load_state_dict(state)


def test_adaptive_beta_stays_positive_and_a_too_small_horizon_is_refused():
    """n_steps / horizon > 5 made beta negative on main (0.1 * (1 - 0.2 * 64 / 10) = -0.028): a negative beta
    rewards divergence, and the next resume died loading it."""
    ctl = AdaptiveKLController(0.1, target_kl=6.0, horizon=10)
    with pytest.raises(ValueError, match=r"kl_horizon=10 is too small for 64 samples.*> 12.8"):
        ctl.update(0.0, 64)
    assert ctl.kl_coef == 0.1  # untouched
    ctl.check_batch(49)  # 0.2 * 49 / 10 = 0.98 < 1
    ok = AdaptiveKLController(0.1, target_kl=6.0, horizon=13)
    for _ in range(100):  # KL far below target every step: beta shrinks by 0.2 * 64 / 13 = 98.5% a step
        assert ok.update(0.0, 64) > 0
    ok.load_state_dict(json.loads(json.dumps(ok.state_dict())))  # and it resumes
    with pytest.raises(ValueError, match="init_kl_coef > 0"):
        AdaptiveKLController(0.0, target_kl=6.0, horizon=13)


def test_kl_horizon_is_checked_against_the_batch_in_one_line():
    from rlhf_cli.config.compose import compose
    from rlhf_cli.config.stage_ppo import check_kl_horizon
    from rlhf_cli.errors import ConfigError

    base = ["ppo.kl_controller=adaptive", "ppo.prompts_per_step=8", "ppo.num_generations=4",
            "reward.functions=[{name: format, pattern: x}]", "critic.init=policy", "data.path=builtin:gsm8k_sft.jsonl"]
    with pytest.raises(ConfigError, match=r"^ppo.kl_horizon=6 is too small for 32 samples per step .*"
                                          r"use ppo.kl_horizon > 6.4$"):
        compose("ppo", None, [*base, "ppo.kl_horizon=6"])
    cfg = compose("ppo", None, [*base, "ppo.kl_horizon=7"])  # 6.4 < 7 on one process
    with pytest.raises(ConfigError, match="64 samples per step .*2 process"):  # the stage checks its world size
        check_kl_horizon(cfg, world_size=2)
    with pytest.raises(ConfigError, match="needs ppo.kl_coef > 0"):
        compose("ppo", None, [*base, "ppo.kl_coef=0"])
