"""The testbed's tasks: what a prompt looks like, what the right answer is, and how a completion is graded.

- `arith_a`: two-digit plus one-digit addition, "37+5=" → "42".
- `arith_b`: two-digit minus one-digit subtraction, "73-8=" → "65".
- `tool`: a two-digit times one-digit product plus a digit, "37*6+5=" → "227". The model does not
  multiply: it writes "[37*6]", the calculator environment appends the result and a bar, "222|", and the
  model finishes the sum itself, "227". A completion's answer is what follows its last bar (or the whole
  completion when it called no tool).
- `arith_c`: three-digit addition ("123+456="), a variant never used in warm-up or the benchmark's
  training split, kept for held-out-variant evaluation.

The tasks are small enough that the warmed-up policy mostly *knows* the answers, but it was warmed up on
targets that 70 % of the time ramble on after the answer ("42+17"), as a base model does; so it samples a
clean answer less than a third of the time, and GRPO has a real skill to learn, one that carries over to
problems it never saw: stop after answering. Healthy runs therefore raise both the training reward and the
held-out accuracy, and a fault costs what it keeps the run from learning.

Prompts are drawn from the operand pairs that are not in the held-out set, so held-out accuracy is
measured on problems the policy never trained on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

from rftfm_agent.errors import RftfmError

TOOL_OPEN, TOOL_CLOSE, TOOL_END, TOOL_ERROR = "[", "]", "|", "E"
HELDOUT_SIZE = 256  # held-out problems per task; two samples each (see heldout.py)


@dataclass(frozen=True)
class Problem:
    """One prompt with its answer; `target` is the supervised completion (tool output included)."""

    task: str
    prompt: str
    answer: str
    target: str


@dataclass(frozen=True)
class Task:
    name: str
    operator: str
    a_range: tuple[int, int]  # inclusive bounds of the first operand
    b_range: tuple[int, int]  # inclusive bounds of the second operand
    uses_tool: bool
    description: str

    def problem(self, a: int, b: int) -> Problem:
        if self.operator == "-" and b > a:
            a, b = b, a
        expression = f"{a}{self.operator}{b}"
        if not self.uses_tool:
            answer = str(a + b if self.operator == "+" else a - b if self.operator == "-" else a * b)
            return Problem(self.name, f"{expression}=", answer, answer)
        product, digit = a * b, (7 * a + 3 * b) % 10  # the added digit is fixed per pair
        answer = str(product + digit)
        target = f"{TOOL_OPEN}{expression}{TOOL_CLOSE}{product}{TOOL_END}{answer}"
        return Problem(self.name, f"{expression}+{digit}=", answer, target)

    def pairs(self) -> list[tuple[int, int]]:
        pairs = [
            (a, b)
            for a in range(self.a_range[0], self.a_range[1] + 1)
            for b in range(self.b_range[0], self.b_range[1] + 1)
        ]
        return [(a, b) for a, b in pairs if a >= b] if self.operator == "-" else pairs

    def heldout(self) -> list[Problem]:
        """The fixed held-out problems of this task (the same on every machine and seed)."""
        return [self.problem(a, b) for a, b in _split(self.name)[1]]

    def sample(self, rng: random.Random, n: int) -> list[Problem]:
        """n training problems drawn with `rng` from the pairs outside the held-out set."""
        train = _split(self.name)[0]
        return [self.problem(*train[rng.randrange(len(train))]) for _ in range(n)]


TASKS: dict[str, Task] = {
    "arith_a": Task("arith_a", "+", (10, 99), (0, 9), False, "two-digit plus one-digit addition"),
    "arith_b": Task("arith_b", "-", (10, 99), (0, 9), False, "two-digit minus one-digit subtraction"),
    "tool": Task("tool", "*", (10, 99), (2, 9), True, "a product from a calculator tool, plus a digit"),
    "arith_c": Task("arith_c", "+", (100, 999), (100, 999), False, "three-digit addition (held-out variant)"),
}
WARMUP_TASKS: tuple[str, ...] = ("arith_a", "arith_b", "tool")


@cache
def _split(name: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(training pairs, held-out pairs) of a task: a fixed-seed shuffle, the first 64 held out."""
    task = TASKS[name]
    pairs = task.pairs()
    order = list(pairs)
    random.Random(f"heldout-{name}").shuffle(order)
    heldout = order[:HELDOUT_SIZE]
    held = set(heldout)
    return [p for p in pairs if p not in held], heldout


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise RftfmError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def final_answer(completion: str) -> str:
    """The answer a completion gives: the text after its last tool-result bar, else all of it."""
    text = completion.strip()
    if TOOL_END in text:
        text = text.rsplit(TOOL_END, 1)[1]
    return text.strip()


def is_correct(completion: str, answer: str) -> bool:
    return final_answer(completion) == answer
