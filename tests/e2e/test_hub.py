"""Hub IDs end to end, offline, from a real Hub cache the test builds: `rlhf train dpo model.path=ORG/NAME
data.path=ORG/DATA` trains, the manifest records the commits read, model.revision picks a branch, a moved
branch is seen, `rlhf generate` takes an ID, an uncached ID is one line, and the token is never printed."""
import json

import pytest

from helpers import TINY, rlhf
from hubcache import add_model_dir, add_repo, card, env, parquet_bytes

pytestmark = pytest.mark.e2e
MODEL, DATA = "acme/tiny-llama", "acme/prefs"


def rows(n=24):
    return [{"prompt": f"Tell me about item {i}.",
             "chosen": [{"role": "user", "content": f"Tell me about item {i}."},
                        {"role": "assistant", "content": f"Item {i} is great."}],
             "rejected": [{"role": "user", "content": f"Tell me about item {i}."},
                          {"role": "assistant", "content": f"Item {i} is awful."}]} for i in range(n)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tokenizer):
    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.loading import load_causal_lm, save_hf_model

    root = tmp_path_factory.mktemp("hub")
    cache = root / "cache"
    commits = {}
    for branch, seed in (("main", 0), ("v2", 5)):
        d = root / f"model-{branch}"
        save_hf_model(load_causal_lm(compose("sft", None, ["model=tiny", f"model.tiny.seed={seed}"]).model, tokenizer),
                      None, tokenizer, d)
        commits[branch] = add_model_dir(cache, MODEL, d, branch)
    commits["data"] = add_repo(cache, DATA, {"README.md": card({"default": {"train_prefs": "data/train_prefs-*"}}),
                                             "data/train_prefs-00000-of-00001.parquet": parquet_bytes(rows())},
                               "dataset")
    return cache, commits


ARGS = ["train", "dpo", *TINY, f"model.path={MODEL}", f"data.path={DATA}", "data.split=train_prefs",
        "data.max_length=64", "train.micro_batch_size=4", "train.max_steps=2", "data.eval_fraction=0",
        "train.save_every=0"]


def test_dpo_from_a_hub_model_and_a_hub_dataset_offline(hub, tmp_path):
    cache, commits = hub
    secret = "hf_DoNotPrintThisToken123"
    proc = rlhf([*ARGS, f"output_dir={tmp_path / 'run'}"], env={**env(cache), "HF_TOKEN": secret})
    assert secret not in proc.stdout + proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["hub"]["model.path"]["id"] == MODEL and manifest["hub"]["model.path"]["commit"] == commits["main"]
    assert manifest["hub"]["data.path"] == {**manifest["hub"]["data.path"], "id": DATA, "commit": commits["data"],
                                            "type": "dataset"}
    assert manifest["data"]["data.path"] == {"hub": DATA, "subset": None, "split": "train_prefs"}
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    # the config keeps the ID (not made an absolute path), so a rerun reads the Hub again
    assert f"path: {MODEL}" in (tmp_path / "run" / "config.yaml").read_text()


def test_revision_and_a_moved_branch_are_recorded(hub, tmp_path):
    cache, commits = hub
    rlhf([*ARGS, "model.revision=v2", f"output_dir={tmp_path / 'v2'}"], env=env(cache))
    m = json.loads((tmp_path / "v2" / "manifest.json").read_text())["hub"]["model.path"]
    assert (m["revision"], m["commit"]) == ("v2", commits["v2"]) and commits["v2"] != commits["main"]
    # the branch moves (main now points at v2's weights): a rerun's manifest says so
    main_ref = next(cache.glob("models--acme--tiny-llama")) / "refs" / "main"
    before = main_ref.read_text()
    main_ref.write_text(commits["v2"])
    try:
        rlhf([*ARGS, f"output_dir={tmp_path / 'moved'}"], env=env(cache))
    finally:
        main_ref.write_text(before)
    moved = json.loads((tmp_path / "moved" / "manifest.json").read_text())["hub"]["model.path"]
    assert moved["commit"] == commits["v2"] != commits["main"]


def test_generate_takes_an_id_and_an_uncached_id_is_one_line(hub, tmp_path):
    cache, _ = hub
    out = rlhf(["generate", f"model={MODEL}", "prompt=Hi", "max_new_tokens=3"], env=env(cache))
    assert out.returncode == 0
    bad = rlhf([*ARGS, "model.path=acme/not-cached", f"output_dir={tmp_path / 'bad'}"], env=env(cache), check=False)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and lines[-1].startswith("error: model.path=acme/not-cached: not in the Hub cache")
    assert "HF_HUB_OFFLINE=1" in lines[-1] and "Traceback" not in bad.stderr
    bad = rlhf([*ARGS, "data.path=acme/nothing", f"output_dir={tmp_path / 'bad2'}"], env=env(cache), check=False)
    assert bad.returncode == 2 and "error: data.path=acme/nothing: not in the Hub cache" in bad.stderr


def test_reference_reward_model_and_eval_take_ids(hub, tmp_path):
    """ref.path and a model reward name Hub repos too (a reward model trained here, put in the cache), and
    `rlhf eval rm-accuracy` scores with one; the manifest records each."""
    cache, commits = hub
    from hubcache import add_model_dir

    rm_run = tmp_path / "rm"
    rlhf(["train", "rm", *TINY, f"model.path={MODEL}", f"data.path={DATA}", "data.split=train_prefs",
          "data.max_length=64", "train.micro_batch_size=4", "train.max_steps=1", "data.eval_fraction=0",
          "train.save_every=0", f"output_dir={rm_run}"], env=env(cache))
    add_model_dir(cache, "acme/tiny-rm", rm_run / "final")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say hi {i}."}) + "\n" for i in range(4)))
    out = tmp_path / "grpo"
    rlhf(["train", "grpo", *TINY, f"model.path={MODEL}", f"ref.path={MODEL}@v2", "grpo.kl_coef=0.1",
          f"data.path={prompts}", "data.prompt_field=prompt", "data.prompt_template=null", "data.reward_fields=[]",
          "data.max_length=64", "grpo.max_new_tokens=4", "grpo.prompts_per_step=2", "grpo.num_generations=2",
          "train.micro_batch_size=4", "train.max_steps=1", "train.save_every=0",
          "reward.functions=[{name: model, path: acme/tiny-rm}]", f"output_dir={out}"], env=env(cache))
    hub_used = json.loads((out / "manifest.json").read_text())["hub"]
    assert hub_used["ref.path"]["commit"] == commits["v2"] and hub_used["model.path"]["commit"] == commits["main"]
    ev = rlhf(["eval", "rm-accuracy", "model=acme/tiny-rm", "data=builtin:hh_harmless_sample.jsonl", "limit=4"],
              env=env(cache))
    assert '"accuracy"' in ev.stdout
