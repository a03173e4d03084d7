"""`rlhf eval KIND key=value ...`: each kind is a module function ``run(words) -> dict`` printed as JSON."""
import importlib

KINDS = {
    # kind: ("module:function", one-line description)
    "gsm8k": ("rlhf_cli.evals.gsm8k:run", "greedy exact-match accuracy on GSM8K-shaped {question, answer} data"),
    "rm-accuracy": ("rlhf_cli.evals.rm_accuracy:run", "pairwise accuracy of a reward model on a preference file"),
}


def get_eval(kind: str):
    from rlhf_cli.config.compose import closest
    from rlhf_cli.errors import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"unknown eval '{kind}'{closest(kind, KINDS)}; kinds: {', '.join(KINDS) or 'none'}")
    module, _, fn = KINDS[kind][0].partition(":")
    return getattr(importlib.import_module(module), fn)
