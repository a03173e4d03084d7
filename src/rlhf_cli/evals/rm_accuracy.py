"""`rlhf eval rm-accuracy model=RUN_OR_DIR data=FILE [limit=N] [batch_size=8]`: pairwise accuracy of a
reward model on any preference file (pairs, HH transcripts or rankings; every strictly ordered pair of a
ranking counts), rendered exactly as in training (``RewardModelScorer``)."""
from __future__ import annotations

import statistics
from types import SimpleNamespace
from typing import List

from rlhf_cli.config.options import parse_kv
from rlhf_cli.config.ranges import Range
from rlhf_cli.config.stage_rm import PreferenceDataConfig
from rlhf_cli.errors import ConfigError

OPTIONS = {"model": str, "data": str, "limit": (int, Range(ge=0)), "batch_size": (int, Range(ge=1)),
           "skip_bad": bool}


def run(words: List[str]) -> dict:
    from rlhf_cli.data.preference import load_preferences
    from rlhf_cli.data.readers import resolve_data_path
    from rlhf_cli.models.dir_check import check_model_dir
    from rlhf_cli.models.reward_model import RewardModelScorer

    opts = parse_kv(words, OPTIONS, "eval rm-accuracy")
    if "model" not in opts or "data" not in opts:
        raise ConfigError("eval rm-accuracy: needs model=RUN_OR_MODEL_DIR and data=FILE")
    check_model_dir(opts["model"], key="model", want="reward")
    resolve_data_path(opts["data"], key="data")
    scorer = RewardModelScorer(opts["model"], batch_size=opts.get("batch_size", 8))
    d = SimpleNamespace(**{**PreferenceDataConfig(path=opts["data"]).__dict__,
                           "template": scorer.cfg["template"], "max_length": scorer.cfg["max_length"],
                           "skip_bad": opts.get("skip_bad", False)})
    items, stats = load_preferences(opts["data"], d, scorer.tokenizer, "outcome", limit=opts.get("limit", 0))
    scores = scorer.score_ids([s for it in items for s in it.seqs])
    right = total = 0
    gaps, pos = [], 0
    for it in items:
        sc = scores[pos:pos + len(it.seqs)]
        pos += len(it.seqs)
        for i in range(len(sc)):
            for j in range(len(sc)):
                if it.ranks[i] < it.ranks[j]:
                    total += 1
                    right += sc[i] > sc[j]
                    gaps.append(sc[i] - sc[j])
    return {"model": opts["model"], "data": opts["data"], "examples": len(items), "pairs": total,
            "accuracy": right / max(total, 1), "mean_margin": statistics.fmean(gaps) if gaps else 0.0,
            "reward_mean": statistics.fmean(scores), "reward_std": statistics.pstdev(scores),
            "records_skipped": stats.skipped, "records_truncated": stats.truncated}
