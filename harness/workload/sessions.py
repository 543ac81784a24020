"""Multi-turn conversations: each turn's prompt carries the history so far.

A session's turn ``k`` sends every earlier prompt and answer followed by a new message, as a chat
client does; the history's answers are synthetic text of the length asked for (the server's own
text is not kept: the load and the context length are what matter, and the emulator counts one
token per word), so a turn's prompt length is known when it is drawn, and a seed repeats a run.
"""

from __future__ import annotations

import random

from harness.protocols.base import RequestSpec
from harness.workload.prompts import synthetic_prompt
from harness.workload.requests import RequestFactory


class SessionFactory(RequestFactory):
    """A :class:`RequestFactory` whose requests form conversations of ``sessions.turns`` turns."""

    def __init__(self, workload, stream: int = 0, started: int | None = None):
        """``started``: the n-th conversation an open loop started on ``stream`` (its own seed,
        request ids and session id, all within 64 bits); None: a closed-loop user's conversations."""
        super().__init__(workload, stream)
        self.sessions = workload.sessions
        self.think_rng = random.Random(f"think:{workload.seed}:{stream}")
        self._session = 0
        if started is not None:
            self.rng.seed(f"{workload.seed}:{stream}:session:{started}")
            self.think_rng.seed(f"think:{workload.seed}:{stream}:session:{started}")
            self._next_id = started * 1000          # turns <= 1000: ids stay distinct
            self._session = started - 1
        self._turn = 0
        self._history: list[str] = []
        self._history_tokens = 0

    def think_s(self) -> float:
        mean = self.sessions.think_time_s
        if mean <= 0:
            return 0.0
        return self.think_rng.expovariate(1.0 / mean) if self.sessions.think == "exponential" else mean

    def next(self) -> RequestSpec:
        if self._turn >= self.sessions.turns:
            self._turn = 0
        if self._turn == 0:
            self._session += 1
            self._history, self._history_tokens = [], 0
        self._turn += 1
        msg = super().next()     # the new message (synthetic, a dataset row, a shared prefix...)
        prompt = " ".join([*self._history, msg.prompt])
        n_in = self._history_tokens + msg.input_tokens
        answer = synthetic_prompt(msg.max_tokens, self.rng)
        self._history += [msg.prompt, answer]
        self._history_tokens += msg.input_tokens + msg.max_tokens
        return RequestSpec(prompt, n_in, msg.max_tokens, msg.request_id, msg.extra_body,
                           session=(self._stream << 24) | self._session, turn=self._turn)

    @property
    def first_turn_next(self) -> bool:
        """The request drawn next starts a conversation."""
        return self._turn == 0 or self._turn >= self.sessions.turns
