"""Regenerate the small example datasets in examples/ from the public data in ../shared/data.

Usage: python scripts/make_examples.py [SHARED_DATA_DIR]
GSM8K (MIT, OpenAI) and HH-RLHF harmless (MIT, Anthropic): licences are copied beside the files.
"""
import gzip
import json
import random
import re
import shutil
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
out = Path(__file__).resolve().parent.parent / "examples"
out.mkdir(exist_ok=True)
CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations: noise for a chat model


def gsm8k(split):
    with open(src / "gsm8k" / f"{split}.jsonl") as f:
        return [json.loads(line) for line in f]


def write(name, rows):
    with open(out / name, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} records")


rng = random.Random(0)
train = gsm8k("train")
rng.shuffle(train)
write("gsm8k_sft.jsonl", [
    {"messages": [{"role": "user", "content": r["question"]},
                  {"role": "assistant", "content": CALC.sub("", r["answer"])}]}
    for r in train[:1000]])
write("gsm8k_prompts.jsonl", [{"question": r["question"], "answer": r["answer"]} for r in train[1000:1500]])
shutil.copy(src / "gsm8k" / "LICENSE", out / "LICENSE.gsm8k")

with gzip.open(src / "hh-rlhf-harmless" / "test.jsonl.gz", "rt") as f:
    hh = [json.loads(line) for line in f]
rng.shuffle(hh)
write("hh_harmless_sample.jsonl", [r for r in hh if r["chosen"] != r["rejected"]][:300])
shutil.copy(src / "hh-rlhf-harmless" / "LICENSE", out / "LICENSE.hh-rlhf")
