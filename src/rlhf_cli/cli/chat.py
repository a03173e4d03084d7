"""`rlhf chat model=RUN_OR_MODEL_DIR [system=... temperature=0 top_p=1 max_new_tokens=256 seed=0]`: talk to a
model in the terminal. Tokens are printed as they are generated; the conversation is kept and rendered with
the model's chat template on every turn (the oldest turns are dropped when it outgrows the context).

Commands: ``/reset`` (forget the conversation, keep the system prompt), ``/system TEXT`` (set the system
prompt; ``/system`` alone clears it), ``/set key=value ...`` (temperature, top_p, max_new_tokens, seed),
``/history``, ``/help``, ``/quit``. Ctrl-C while the model writes stops that reply (it is not kept);
Ctrl-D, ``/quit`` or an empty line quits.
"""
from __future__ import annotations

import sys
from typing import List, Sequence, TextIO

from rlhf_cli.config.options import parse_kv
from rlhf_cli.config.ranges import Range
from rlhf_cli.errors import ConfigError

SETTABLE = {"max_new_tokens": (int, Range(ge=1)), "temperature": (float, Range(ge=0)),  # 0 = greedy
            "top_p": (float, Range(gt=0, le=1)), "seed": (int, Range(ge=0, lt=2**32))}
OPTIONS = {"model": str, "system": str, **SETTABLE}
HELP = ("/reset  forget the conversation | /system TEXT  set the system prompt | /set temperature=0.7 top_p=0.9 "
        "max_new_tokens=256 seed=1 | /history | /quit")


class ChatSession:
    """A conversation with one model: history, settings, and streamed replies."""

    def __init__(self, lm, tok, system: str = "", out: TextIO = sys.stdout, **settings):
        self.lm, self.tok, self.out = lm, tok, out
        self.system = system
        self.turns: List[dict] = []
        self.settings = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 256, "seed": 0, **settings}
        self.context = getattr(lm.config, "max_position_embeddings", None) or 4096

    def messages(self) -> List[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def prompt_ids(self) -> List[int]:
        from rlhf_cli.data.prompts import encode_prompt

        if getattr(self.tok, "chat_template", None):
            return encode_prompt(self.tok, self.messages())
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in self.messages()) + "Assistant:"
        return self.tok(text)["input_ids"]

    def _fit(self) -> List[int]:
        """Prompt ids, dropping the oldest exchanges while prompt + reply would not fit the context."""
        ids = self.prompt_ids()
        while len(ids) + self.settings["max_new_tokens"] > self.context and len(self.turns) > 1:
            self.turns = self.turns[2:] if len(self.turns) > 2 else self.turns[1:]
            self.out.write("(oldest turn dropped to fit the context)\n")
            ids = self.prompt_ids()
        return ids

    def reply(self, text: str) -> str:
        """Stream the model's answer to ``text`` to ``out`` and keep both in the history."""
        import torch
        from transformers import TextStreamer

        session = self

        class Streamer(TextStreamer):
            def on_finalized_text(self, piece: str, stream_end: bool = False):
                session.out.write(piece + ("\n" if stream_end else ""))
                session.out.flush()
                session.chunks.append(piece)

        self.turns.append({"role": "user", "content": text})
        ids = self._fit()
        x = torch.tensor([ids], device=self.lm.device)
        s = self.settings
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        kwargs = dict(do_sample=s["temperature"] > 0, max_new_tokens=s["max_new_tokens"], pad_token_id=pad)
        if s["temperature"] > 0:
            kwargs.update(temperature=s["temperature"], top_p=s["top_p"])
            torch.manual_seed(s["seed"])
        self.chunks: List[str] = []
        try:
            with torch.no_grad():
                out = self.lm.generate(x, attention_mask=torch.ones_like(x), streamer=Streamer(
                    self.tok, skip_prompt=True, skip_special_tokens=True), **kwargs)
        except KeyboardInterrupt:
            self.turns.pop()
            self.out.write("\n(stopped; this reply is not kept)\n")
            return ""
        answer = self.tok.decode(out[0, len(ids):], skip_special_tokens=True).strip()
        self.turns.append({"role": "assistant", "content": answer})
        return answer

    def command(self, line: str) -> bool:
        """Run a /command; False means quit."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "reset":
            self.turns = []
            self.out.write("(conversation cleared)\n")
        elif name == "system":
            self.system = arg
            self.out.write(f"(system prompt {'set' if arg else 'cleared'})\n")
        elif name == "set":
            try:
                new = parse_kv(arg.split(), SETTABLE, "/set")
            except ConfigError as e:
                self.out.write(f"{e}\n")
                return True
            if not new:
                self.out.write("(" + " ".join(f"{k}={v}" for k, v in self.settings.items()) + ")\n")
            self.settings.update(new)
            for k, v in new.items():
                self.out.write(f"({k}={v})\n")
        elif name == "history":
            for m in self.messages():
                self.out.write(f"[{m['role']}] {m['content']}\n")
            self.out.write(f"({len(self.turns)} turns)\n")
        else:
            self.out.write(HELP + "\n")
        return True


def run_chat(words: Sequence[str]) -> None:
    from rlhf_cli.models.loading import load_for_generation

    opts = parse_kv(words, OPTIONS, "chat")
    model = opts.pop("model", "smollm2-135m")
    system = opts.pop("system", "")
    lm, tok = load_for_generation(model)
    chat = ChatSession(lm, tok, system, **opts)
    print(f"chatting with {model}; /help for commands, Ctrl-D or an empty line to quit")
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not line:
            break
        if line.startswith("/"):
            if not chat.command(line):
                break
            continue
        sys.stdout.write("model> ")
        sys.stdout.flush()
        chat.reply(line)
