"""Claims and verdicts: a verdict is computed from results by a stated rule, never written by hand.

A :class:`Verdict` holds the claim in our words, the rule applied, the per-seed evidence and the
outcome; it renders itself as Markdown in a notebook. Quick-profile verdicts speak about the direction
of an effect at toy scale; the profile is part of every verdict's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Verdict:
    claim: str
    rule: str
    profile: str
    evidence: tuple[str, ...]
    holds: bool | None  # None: not enough evidence to decide

    @property
    def label(self) -> str:
        return {True: "reproduced", False: "not reproduced", None: "undecided"}[self.holds]

    def _repr_markdown_(self) -> str:
        mark = {True: "✅", False: "❌", None: "❔"}[self.holds]
        lines = [f"**Verdict ({self.profile} profile): {mark} {self.label}** — {self.claim}", "",
                 f"*Rule:* {self.rule}", ""]
        lines += [f"- {e}" for e in self.evidence]
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"[{self.profile}] {self.label}: {self.claim} (rule: {self.rule})"


def every_seed_greater(claim: str, a: Sequence[float], b: Sequence[float], *, profile: str, a_name: str,
                       b_name: str, seeds: Sequence[int] | None = None, margin: float = 0.0) -> Verdict:
    """Holds when ``a − b > margin`` in every seed (paired by seed); undecided with no seeds."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    seeds = list(seeds) if seeds is not None else list(range(len(a)))
    diffs = a - b
    evidence = tuple(
        f"seed {s}: {a_name} {x:.2f} − {b_name} {y:.2f} = {d:+.2f}" for s, x, y, d in zip(seeds, a, b, diffs)
    )
    holds = None if len(diffs) == 0 or np.isnan(diffs).any() else bool((diffs > margin).all())
    rule = f"{a_name} − {b_name} > {margin:g} in every seed ({len(diffs)} seed{'s' if len(diffs) != 1 else ''})"
    return Verdict(claim=claim, rule=rule, profile=profile, evidence=evidence, holds=holds)
