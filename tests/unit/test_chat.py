"""`rlhf chat`: streamed replies, history through the chat template, /reset /system /set; the real command in
a pseudo-terminal."""
import io
import os
import sys
from pathlib import Path

import pytest
import torch

from rlhf_cli.cli.chat import ChatSession
from rlhf_cli.data.chat import render_prompt

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaForCausalLM

    from rlhf_cli.config.schema import TinyModelConfig
    from rlhf_cli.models.loading import save_hf_model, tiny_config

    torch.manual_seed(0)
    lm = LlamaForCausalLM(tiny_config(TinyModelConfig(), tokenizer))
    d = tmp_path_factory.mktemp("chat") / "model"
    save_hf_model(lm, None, tokenizer, d)
    return d


def test_session_streams_and_keeps_history(model_dir):
    from rlhf_cli.models.loading import load_for_generation

    lm, tok = load_for_generation(str(model_dir))
    out = io.StringIO()
    chat = ChatSession(lm, tok, "Be brief.", out=out, max_new_tokens=12)
    first = chat.reply("hello")
    assert len(chat.chunks) >= 2, "the reply was not streamed piece by piece"
    assert "".join(chat.chunks).strip() == first and out.getvalue().strip() == first
    assert chat.messages() == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
                               {"role": "assistant", "content": first}]
    chat.turns.append({"role": "user", "content": "more"})
    assert chat.prompt_ids() == render_prompt(tok, chat.messages())  # the whole history, chat-templated
    chat.turns.pop()
    assert chat.command("/reset") and chat.turns == [] and chat.system == "Be brief."
    assert chat.reply("hello") == first  # greedy: the same answer to the same conversation
    assert chat.command("/system You are a pirate.") and chat.messages()[0]["content"] == "You are a pirate."
    assert chat.command("/set temperature=0.8 top_p=0.9") and chat.settings["temperature"] == 0.8
    chat.command("/set temprature=1")
    assert "unknown key 'temprature'" in out.getvalue() and "temperature" in out.getvalue().splitlines()[-1]
    assert chat.settings["top_p"] == 0.9 and not chat.command("/quit")


def test_context_overflow_drops_oldest_turns(model_dir):
    from rlhf_cli.models.loading import load_for_generation

    lm, tok = load_for_generation(str(model_dir))
    out = io.StringIO()
    chat = ChatSession(lm, tok, out=out, max_new_tokens=4)
    chat.context = 60
    for i in range(4):
        chat.reply(f"message number {i} with a few words in it")
    assert "oldest turn dropped" in out.getvalue()
    assert len(chat.prompt_ids()) <= 60 and chat.turns[-2]["content"].startswith("message number 3")


def test_chat_in_a_pseudo_terminal(model_dir):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = pexpect.spawn(sys.executable, ["-m", "rlhf_cli.cli.app", "chat", f"model={model_dir}",
                                           "max_new_tokens=6"], env=env, timeout=120, encoding="utf-8")
    child.expect("you> ")
    child.sendline("/system Be brief.")
    child.expect(r"\(system prompt set\)")
    child.expect("you> ")
    child.sendline("hello")
    child.expect("model> ")
    child.expect("you> ")
    child.sendline("/history")
    child.expect(r"\[system\] Be brief\.")
    child.expect(r"\[user\] hello")
    child.expect(r"\[assistant\] ")
    child.expect(r"\(2 turns\)")
    child.sendline("/set temperature=0.5")
    child.expect(r"\(temperature=0.5\)")
    child.sendline("/reset")
    child.expect(r"\(conversation cleared\)")
    child.sendline("/history")
    child.expect(r"\(0 turns\)")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
