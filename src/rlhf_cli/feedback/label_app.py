"""The `rlhf label` terminal UI (Textual): rank K responses per prompt with the keyboard only.

Keys (shown in the footer):
  1..K      put that response next in the order (best first)
  =         tie: the next response pressed joins the previous one's rank
  backspace take back the last response placed
  enter     save the ranking (the last unplaced response, if one is left, goes last)
  b         all bad (saved to the skipped file; nothing for the reward model to learn)
  s         skip this prompt (saved to the skipped file)
  n         write a free-text note for this item (enter keeps it, escape cancels)
  u         undo: remove the last saved item from its file and show it again
  q, ctrl+c quit (everything ranked is already on disk)

Every decision is one fsynced JSONL line (``rankings_io.JsonlAppender``) written before the next item shows.
"""
from __future__ import annotations

import time
from typing import List, Optional

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Input, Static

from rlhf_cli.feedback.candidates import Item
from rlhf_cli.feedback.rankings_io import JsonlAppender, ranks_from_groups


class LabelApp(App):
    """One labelling session over ``items`` (the ones still to do)."""

    CSS = """
    #status { background: $primary-background; padding: 0 1; }
    #prompt { border: round $accent; padding: 0 1; margin: 0 0 1 0; }
    .response { border: round $secondary; padding: 0 1; margin: 0 0 1 0; }
    #order { background: $boost; padding: 0 1; }
    #note { display: none; }
    #note.visible { display: block; }
    """
    BINDINGS = [
        Binding("enter", "submit", "save ranking"),
        Binding("backspace", "take_back", "take back"),
        Binding("b", "all_bad", "all bad"),
        Binding("s", "skip", "skip"),
        Binding("n", "note", "note"),
        Binding("u", "undo", "undo last"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, items: List[Item], out, skipped, annotator: str, done_before: int = 0, total: int = 0):
        super().__init__()
        self.items, self.annotator = items, annotator
        self.out, self.skipped = JsonlAppender(out), JsonlAppender(skipped)
        self.pos = 0
        self.groups: List[List[int]] = []
        self.tie_next = False
        self.note: Optional[str] = None
        self.history: List[tuple] = []  # (appender, offset before the line, item position)
        self.done_before, self.total = done_before, total or len(items)
        self.saved = {"ranked": 0, "skipped": 0, "all_bad": 0}
        self.message = ""

    # ---- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with VerticalScroll(id="body"):
            yield Static(id="prompt")
            yield VerticalScroll(id="responses")
        yield Static(id="order")
        yield Input(placeholder="note for this item (enter to keep, escape to cancel)", id="note")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "rlhf label"
        self.show_item()

    @property
    def item(self) -> Optional[Item]:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def show_item(self) -> None:
        self.groups, self.tie_next, self.note = [], False, None
        it = self.item
        if it is None:
            self.exit(self.saved)
            return
        self.query_one("#prompt", Static).update(f"[b]Prompt[/b]\n{_esc(it.text)}")
        box = self.query_one("#responses", VerticalScroll)
        box.remove_children()
        box.mount_all([Static(f"[b][{i + 1}][/b] {_esc(r)}", classes="response") for i, r in enumerate(it.responses)])
        self.refresh_status()

    def refresh_status(self) -> None:
        it = self.item
        if it is None:
            return
        n = self.done_before + sum(self.saved.values()) + 1
        self.query_one("#status", Static).update(
            f"item {n}/{self.total}  ·  annotator {self.annotator}  ·  ranked {self.saved['ranked']} this session"
            + (f"  ·  {self.message}" if self.message else ""))
        order = " > ".join(" = ".join(str(i + 1) for i in g) for g in self.groups) or "(press 1-"f"{len(it.responses)})"
        note = f"   note: {self.note}" if self.note else ""
        tie = "  [tie: next joins the last]" if self.tie_next else ""
        self.query_one("#order", Static).update(f"[b]order[/b] (best first): {order}{tie}{note}")

    # ---- keys -----------------------------------------------------------------------------------
    def on_key(self, event) -> None:
        if self.focused is self.query_one("#note", Input) or self.item is None:
            return
        ch = event.character or ""
        k = len(self.item.responses)
        if ch.isdigit() and 1 <= int(ch) <= k:
            event.stop()
            self.place(int(ch) - 1)
        elif ch == "=":
            event.stop()
            if self.groups:
                self.tie_next = True
                self.refresh_status()

    def place(self, i: int) -> None:
        self.message = ""
        if any(i in g for g in self.groups):
            self.message = f"[{i + 1}] is already placed"
        elif self.tie_next and self.groups:
            self.groups[-1].append(i)
        else:
            self.groups.append([i])
        self.tie_next = False
        self.refresh_status()

    def action_take_back(self) -> None:
        if self.groups:
            self.groups[-1].pop()
            if not self.groups[-1]:
                self.groups.pop()
        self.tie_next = False
        self.refresh_status()

    def _record(self, **extra) -> dict:
        it = self.item
        rec = {"prompt": it.prompt, "responses": it.responses, **extra, "models": it.models,
               "annotator": self.annotator, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.note:
            rec["note"] = self.note
        return rec

    def _save(self, appender: JsonlAppender, rec: dict, kind: str) -> None:
        start, _ = appender.append(rec)
        self.history.append((appender, start, self.pos, kind))
        self.saved[kind] += 1
        self.pos += 1
        self.message = ""
        self.show_item()

    def action_submit(self) -> None:
        it = self.item
        if it is None:
            return
        k = len(it.responses)
        placed = {i for g in self.groups for i in g}
        left = [i for i in range(k) if i not in placed]
        if len(left) > 1:
            self.message = f"rank every response first ({len(left)} left), or b = all bad, s = skip"
            self.refresh_status()
            return
        groups = self.groups + ([left] if left else [])
        if len(groups) < 2:
            self.message = "all tied: nothing to learn; press b (all bad) or s (skip), or backspace"
            self.refresh_status()
            return
        self._save(self.out, self._record(ranks=ranks_from_groups(groups, k)), "ranked")

    def action_all_bad(self) -> None:
        if self.item is not None:
            self._save(self.skipped, self._record(verdict="all_bad"), "all_bad")

    def action_skip(self) -> None:
        if self.item is not None:
            self._save(self.skipped, self._record(verdict="skip"), "skipped")

    def action_undo(self) -> None:
        if not self.history:
            self.message = "nothing to undo in this session"
            self.refresh_status()
            return
        appender, start, pos, kind = self.history.pop()
        appender.undo(start)
        self.saved[kind] -= 1
        self.pos = pos
        self.show_item()
        self.message = "undone: rank it again"
        self.refresh_status()

    def action_note(self) -> None:
        box = self.query_one("#note", Input)
        box.value = self.note or ""
        box.add_class("visible")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.note = event.value.strip() or None
        self._close_note()

    def key_escape(self) -> None:
        if self.focused is self.query_one("#note", Input):
            self._close_note()

    def _close_note(self) -> None:
        box = self.query_one("#note", Input)
        box.remove_class("visible")
        self.set_focus(None)
        self.refresh_status()

    async def action_quit(self) -> None:
        self.exit(self.saved)

    def on_unmount(self) -> None:
        self.out.close()
        self.skipped.close()


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
