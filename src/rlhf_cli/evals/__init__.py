"""`rlhf eval KIND key=value ...`: each kind is an ``EVALS`` entry ``run(words) -> dict`` printed as JSON.

Adding one is one registration (a decorated function, or a lazy "module:function" as below) with a
one-line ``description``.
"""
from rlhf_cli.registry import Registry, lazy_entry

EVALS = Registry("eval")
EVALS.register("gsm8k", description="greedy exact-match accuracy on GSM8K-shaped {question, answer} data")(
    lazy_entry("rlhf_cli.evals.gsm8k:run"))
EVALS.register("rm-accuracy", description="pairwise accuracy of a reward model on a preference file")(
    lazy_entry("rlhf_cli.evals.rm_accuracy:run"))
EVALS.register("win-rate", description="model_a vs model_b on prompts, judged by a reward model (judge=rm rm=...)")(
    lazy_entry("rlhf_cli.evals.win_rate:run"))
EVALS.register("kl", description="mean KL(policy || reference) on responses the policy samples for prompts")(
    lazy_entry("rlhf_cli.evals.kl:run"))
EVALS.register("perplexity", description="perplexity of held-out text (text, messages or prompt/completion)")(
    lazy_entry("rlhf_cli.evals.perplexity:run"))


def get_eval(kind: str):
    from rlhf_cli.errors import ConfigError
    from rlhf_cli.registry import UnknownNameError

    try:
        return EVALS.get(kind)
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None
