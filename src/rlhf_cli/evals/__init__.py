"""`rlhf eval KIND key=value ...`: each kind is an ``EVALS`` entry ``run(words) -> dict`` printed as JSON.

Adding one is one registration (a decorated function, or a lazy "module:function" as below) with a
one-line ``description``.
"""
from rlhf_cli.algos.lazy import lazy_entry
from rlhf_cli.algos.registry import Registry

EVALS = Registry("eval")
EVALS.register("gsm8k", description="greedy exact-match accuracy on GSM8K-shaped {question, answer} data")(
    lazy_entry("rlhf_cli.evals.gsm8k:run"))
EVALS.register("rm-accuracy", description="pairwise accuracy of a reward model on a preference file")(
    lazy_entry("rlhf_cli.evals.rm_accuracy:run"))


def get_eval(kind: str):
    from rlhf_cli.algos.registry import UnknownNameError
    from rlhf_cli.errors import ConfigError

    try:
        return EVALS.get(kind)
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None
