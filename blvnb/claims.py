r"""The papers' claims as data, and verdicts computed from results by a stated rule — never typed.

Every claim of both papers is an entry of ``claims.yaml`` beside this file (see its header for the
fields): an id, the paper, the table or figure (``"T4"``, ``"Fig. 3"``), the claim in our words, and the
rule that decides it — which metric, which arms (runs of a results table, named as that table names
them), which comparison, the margin, the minimum number of seeds, and the smallest profile whose
chapter runs it. :data:`CLAIMS` holds them, expanded one per row.

A chapter hands a claim its per-seed numbers, ``{arm: [value of seed 0, seed 1, …]}`` (same seeds for
every arm: the comparisons are **paired by seed**), and gets a :class:`Verdict`:

* **reproduced** — the 95 % t-interval of the seed-paired mean difference lies wholly on the claimed
  side of the margin (for every pairwise test the rule makes);
* **not reproduced** — it lies wholly on the other side (for at least one test);
* **inconclusive** — the interval straddles the margin, or there are fewer seeds than the minimum;
* **not run** — no chapter evaluated it in this profile; the verdict says which profile would.

A claim's ``kind`` is ``reproduction`` (a statement of a paper, decided on our runs) or ``check`` (a test
that our implementation does what the paper's method prescribes, on inputs built for it: it cannot speak
for or against the paper's result, so the status page shows it apart and counts it with no verdict of
the papers).

With *n* seeds and paired differences :math:`d_s`, the interval is
:math:`\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt n` (:func:`t_interval`). A verdict renders as Markdown
in a notebook (with its evidence: the per-seed differences, their mean, the interval, the profile, the
library version), converts to a dict for JSON (:meth:`Verdict.to_dict`), and :func:`save` writes it
where ``blvnb reproduce`` collects verdicts for the status page (``book/reproduction.md``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from blvnb.errors import BlvnbError, ConfigError
from blvnb.experiments.profiles import PROFILES

DATA = Path(__file__).with_name("claims.yaml")
OUTCOMES = ("reproduced", "not reproduced", "inconclusive", "not run")
PROFILE_ORDER = tuple(PROFILES)  # smallest first, as blvnb.experiments.profiles defines them
COMPARISONS = ("greater", "not-worse", "within", "ordering", "best", "all-greater", "gain-greater", "less-than",
               "greater-than", "split", "spread", "saturating", "correlation")
KINDS = ("reproduction", "check")
MARKS = {"reproduced": "✔", "not reproduced": "✘", "inconclusive": "?", "not run": "–"}  # in every font
LEVEL = 0.95


class ClaimError(BlvnbError):
    """A claim id, its arms or the numbers handed to it are not what the claim needs."""


def _norm(name) -> str:
    """Arm names match loosely: case, spaces and punctuation are ignored ("DA + TS" is "da-ts")."""
    return re.sub(r"[^0-9a-z.]+", "", str(name).lower().replace("/", "."))


# --- statistics --------------------------------------------------------------------------------------

def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, tuple[float, float]]:
    """Mean and two-sided ``level`` t-interval of ``values`` (``(−inf, inf)`` with fewer than 2)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, (-math.inf, math.inf)
    mean = float(v.mean())
    if v.size < 2:
        return mean, (-math.inf, math.inf)
    # half width: t_{(1+level)/2, n-1} · s / √n
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, (mean - half, mean + half)


@dataclass(frozen=True)
class PairedTest:
    """One paired test: per-seed ``differences`` against ``threshold``; the claim is that they lie
    ``above`` (or ``below``) it."""

    label: str
    differences: tuple[float, ...]
    mean: float
    interval: tuple[float, float]
    threshold: float
    direction: str  # "above" | "below"
    outcome: str

    @classmethod
    def of(cls, label: str, differences, threshold: float, direction: str) -> PairedTest:
        d = tuple(float(x) for x in np.asarray(differences, dtype=float).reshape(-1))
        if any(math.isnan(x) for x in d):
            return cls(label, d, math.nan, (math.nan, math.nan), float(threshold), direction, "inconclusive")
        mean, (lo, hi) = t_interval(d)
        above, below = lo > threshold, hi < threshold
        if direction == "above":
            outcome = "reproduced" if above else "not reproduced" if below else "inconclusive"
        else:
            outcome = "reproduced" if below else "not reproduced" if above else "inconclusive"
        return cls(label, d, mean, (lo, hi), float(threshold), direction, outcome)

    def to_dict(self) -> dict:
        fin = lambda x: x if math.isfinite(x) else None  # noqa: E731  JSON has no infinity
        return {"test": self.label, "differences": list(self.differences), "mean": fin(self.mean),
                "interval": [fin(self.interval[0]), fin(self.interval[1])], "threshold": self.threshold,
                "claimed": self.direction, "outcome": self.outcome}



def _sweep_reason(profile, n: int) -> str:
    """Where a subset profile ran this claim's arms at its sweep seeds only: the pointer to why."""
    from blvnb.experiments import tables
    from blvnb.experiments.profiles import PROFILES

    p = PROFILES.get(str(profile))
    if p is None or not p.subset or n != tables.QUICK_SWEEP_SEEDS or n >= len(p.seeds):
        return ""
    return (f" In the {p.name} profile the extra points of a sweep run at {n} seed{'s' if n != 1 else ''} only; "
            "the quick profile's page says why and what all seeds would cost.")

def _combine(outcomes: Sequence[str]) -> str:
    if outcomes and all(o == "reproduced" for o in outcomes):
        return "reproduced"
    return "not reproduced" if "not reproduced" in outcomes else "inconclusive"


def _fmt(x: float, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    s = f"{x:+.3g}" if sign else f"{x:.3g}"
    return s.replace("-", "−")


# --- claims ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """One claim and its rule (fields as in ``claims.yaml``). ``claim["id"]`` works as ``claim.id``."""

    id: str
    paper: str
    table: str
    statement: str
    source: str
    metric: str
    comparison: str
    arms: tuple[str, ...]
    margin: float = 0.0
    constant: float | None = None
    sign: str | None = None
    min_seeds: int = 3
    runs_in: str = "quick"
    row: str | None = None
    chapter: str | None = None
    paper_cells: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    row_labels: Mapping[str, str] = field(default_factory=dict)
    rule_text: str | None = None  # replaces the generated rule (observations of our own, not the papers')
    kind: str = "reproduction"  # or "check": an implementation check, shown apart from the reproductions

    def __getitem__(self, key: str):
        return getattr(self, key)

    def keys(self):
        return [f for f in self.__dataclass_fields__]

    # the rule, in words
    @property
    def rule(self) -> str:
        if self.rule_text:
            return self.rule_text
        a, m, c = self.arms, _fmt(self.margin, sign=False), self.comparison
        if c == "greater":
            text = f"{a[0]} − {a[1]} > {m}"
        elif c == "not-worse":
            text = " and ".join(f"{a[0]} − {o} > −{m}" for o in a[1:])
        elif c == "within":
            text = f"|{a[0]} − {a[1]}| < {m}"
        elif c == "ordering":
            text = " > ".join(a) + (f" (each step by more than {m})" if self.margin else "")
        elif c == "best":
            text = " and ".join(f"{a[0]} − {o} > {m}" for o in a[1:])
        elif c == "all-greater":
            text = " and ".join(f"{o} − {a[0]} > {m}" for o in a[1:])
        elif c == "gain-greater":
            text = " and ".join(f"({a[0]} − {a[1]}) − ({a[i]} − {a[i + 1]}) > {m}" for i in range(2, len(a) - 1, 2))
        elif c == "less-than":
            text = f"{a[0]} < {_fmt(self.constant, sign=False)}"
        elif c == "greater-than":
            text = f"{a[0]} > {_fmt(self.constant, sign=False)}"
        elif c == "split":
            k = _fmt(self.constant, sign=False)
            text = f"{a[0]} < {k} and {a[1]} > {k}"
        elif c == "spread":
            text = f"max − min over {', '.join(a)} < {m} (per seed)"
        elif c == "saturating":
            text = (f"{a[-1]} − {a[0]} > {m} and ({a[1]} − {a[0]}) − ({a[-1]} − {a[-2]}) > 0 "
                    "(gains shrink)")
        else:  # correlation
            over = f" over {', '.join(a)}" if a else " over the arms given"
            text = f"Spearman correlation (per seed){over} {'< 0' if self.sign == 'negative' else '> 0'}"
        return (f"{self.metric}: {text}; decided by the 95 % t-interval of the seed-paired mean, "
                f"at least {self.min_seeds} seed{'s' if self.min_seeds != 1 else ''}")

    def evaluate(self, values: Mapping[str, Sequence[float] | float], *, profile: str,
                 seeds: Sequence[int] | None = None, x: Mapping[str, Sequence[float] | float] | None = None,
                 chapter: str | None = None, note: str = "") -> Verdict:
        """The verdict of this claim on ``values`` = ``{arm: [per-seed values]}`` (extra arms are ignored).

        ``x``: for ``correlation`` claims, the other quantity per arm (per seed, or one number per arm).
        """
        if not isinstance(values, Mapping):
            raise ClaimError(f"{self.id}: values must be a mapping {{arm: [per-seed values]}}, got {type(values).__name__}")
        table = {_norm(k): np.atleast_1d(np.asarray(v, dtype=float)).reshape(-1) for k, v in values.items()}
        arms = list(self.arms) if self.arms else list(values)
        missing = [a for a in arms if _norm(a) not in table]
        if missing:
            raise ClaimError(f"{self.id}: no values for arm(s) {missing}; the claim compares {list(self.arms)}, "
                             f"got {list(values)}")
        cols = {a: table[_norm(a)] for a in arms}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            raise ClaimError(f"{self.id}: arms have different numbers of seeds "
                             f"{ {a: len(v) for a, v in cols.items()} }: comparisons are paired by seed")
        n = lengths.pop()
        seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n:
            raise ClaimError(f"{self.id}: {len(seeds)} seeds {seeds} for {n} values per arm")
        tests = self._tests(cols, x, n)
        outcome = _combine([t.outcome for t in tests])
        if n < self.min_seeds:
            outcome = "inconclusive"
            note = (note + " " if note else "") + (f"Only {n} seed{'s' if n != 1 else ''}: the rule needs at least "
                                                   f"{self.min_seeds}." + _sweep_reason(profile, n))
        from blvnb import __version__

        return Verdict(claim=self, profile=str(profile), outcome=outcome, seeds=tuple(seeds), tests=tuple(tests),
                       values={a: tuple(float(u) for u in v) for a, v in cols.items()}, version=__version__,
                       chapter=chapter or os.environ.get("BLVNB_NOTEBOOK"), note=note)

    def _tests(self, cols: dict[str, np.ndarray], x, n: int) -> list[PairedTest]:
        a, m, c = list(cols), self.margin, self.comparison
        v = [cols[k] for k in a]
        if c == "greater":
            return [PairedTest.of(f"{a[0]} − {a[1]}", v[0] - v[1], m, "above")]
        if c == "not-worse":
            return [PairedTest.of(f"{a[0]} − {o}", v[0] - cols[o], -m, "above") for o in a[1:]]
        if c == "within":
            d = v[0] - v[1]
            return [PairedTest.of(f"{a[0]} − {a[1]} (lower bound)", d, -m, "above"),
                    PairedTest.of(f"{a[0]} − {a[1]} (upper bound)", d, m, "below")]
        if c == "ordering":
            return [PairedTest.of(f"{a[i]} − {a[i + 1]}", v[i] - v[i + 1], m, "above") for i in range(len(a) - 1)]
        if c == "best":
            return [PairedTest.of(f"{a[0]} − {o}", v[0] - cols[o], m, "above") for o in a[1:]]
        if c == "all-greater":
            return [PairedTest.of(f"{o} − {a[0]}", cols[o] - v[0], m, "above") for o in a[1:]]
        if c == "gain-greater":  # the first pair's gain against each other pair's: (a0 − a1) − (a2 − a3), (a0 − a1) − (a4 − a5) …
            if len(a) < 4 or len(a) % 2:
                raise ClaimError(f"{self.id}: gain-greater compares pairs of arms (gain, then each other gain), got {a}")
            return [PairedTest.of(f"({a[0]} − {a[1]}) − ({a[i]} − {a[i + 1]})", (v[0] - v[1]) - (v[i] - v[i + 1]), m,
                                  "above") for i in range(2, len(a), 2)]
        if c == "less-than":
            return [PairedTest.of(a[0], v[0], self.constant, "below")]
        if c == "greater-than":
            return [PairedTest.of(a[0], v[0], self.constant, "above")]
        if c == "split":
            return [PairedTest.of(a[0], v[0], self.constant, "below"), PairedTest.of(a[1], v[1], self.constant, "above")]
        if c == "spread":
            return [PairedTest.of(f"max − min over {len(a)} arms", np.ptp(np.stack(v), axis=0), m, "below")]
        if c == "saturating":
            return [PairedTest.of(f"{a[-1]} − {a[0]}", v[-1] - v[0], m, "above"),
                    PairedTest.of(f"({a[1]} − {a[0]}) − ({a[-1]} − {a[-2]})", (v[1] - v[0]) - (v[-1] - v[-2]), 0.0, "above")]
        if c == "correlation":
            return [self._correlation(cols, x, n)]
        raise ConfigError(f"{self.id}: unknown comparison {c!r}; known: {COMPARISONS}")  # pragma: no cover

    def _correlation(self, cols, x, n: int) -> PairedTest:
        from scipy import stats

        if x is None:
            raise ClaimError(f"{self.id}: a correlation claim needs x={{arm: value(s)}} beside the values")
        xs = {_norm(k): np.asarray(val, dtype=float).reshape(-1) for k, val in x.items()}
        missing = [a for a in cols if _norm(a) not in xs]
        if missing:
            raise ClaimError(f"{self.id}: no x for arm(s) {missing}")
        if len(cols) < 3:
            raise ClaimError(f"{self.id}: a rank correlation needs at least 3 arms, got {list(cols)}")
        xm = np.stack([np.broadcast_to(xs[_norm(a)], (n,)) for a in cols])  # arms × seeds
        ym = np.stack(list(cols.values()))
        r = []
        for s in range(n):
            if np.ptp(xm[:, s]) == 0 or np.ptp(ym[:, s]) == 0:
                r.append(math.nan)  # a constant has no rank correlation
            else:
                r.append(float(stats.spearmanr(xm[:, s], ym[:, s]).statistic))
        direction = "below" if self.sign == "negative" else "above"
        return PairedTest.of(f"Spearman ρ over {len(cols)} arms", r, 0.0, direction)

    def not_run(self, profile: str, note: str = "") -> Verdict:
        """The verdict of a claim no chapter evaluated in ``profile``."""
        from blvnb import __version__

        return Verdict(claim=self, profile=str(profile), outcome="not run", seeds=(), tests=(), values={},
                       version=__version__, chapter=self.chapter, note=note)


def _expand(entry: dict, defaults: dict) -> list[Claim]:
    e = {**defaults, **entry}
    unknown = set(e) - set(Claim.__dataclass_fields__) - {"rows"}
    if unknown:
        raise ConfigError(f"claims.yaml, {e.get('id')}: unknown field(s) {sorted(unknown)}")
    if e.get("comparison") not in COMPARISONS:
        raise ConfigError(f"claims.yaml, {e.get('id')}: comparison {e.get('comparison')!r} is not one of {COMPARISONS}")
    if e.get("kind", "reproduction") not in KINDS:
        raise ConfigError(f"claims.yaml, {e.get('id')}: kind must be one of {KINDS}, got {e.get('kind')!r}")
    if e.get("kind") == "check" and e.get("paper_cells"):
        raise ConfigError(f"claims.yaml, {e.get('id')}: a check has no paper cells (it reproduces no number of the paper)")
    if e.get("paper") not in ("blv", "dars"):
        raise ConfigError(f"claims.yaml, {e.get('id')}: paper must be blv or dars, got {e.get('paper')!r}")
    rows = e.pop("rows", None)
    e["arms"] = tuple(str(a) for a in e.get("arms") or ())
    e["margin"] = float(e.get("margin") or 0.0)
    e["constant"] = None if e.get("constant") is None else float(e["constant"])
    e["paper_cells"] = dict(e.get("paper_cells") or {})
    e["row_labels"] = {str(k): str(v) for k, v in (e.get("row_labels") or {}).items()}
    if not rows:
        return [Claim(**e)]

    def cells_for(r: str) -> dict:
        label = e["row_labels"].get(r, r)
        return {arm: {k: str(v).replace("{row}", label) for k, v in where.items()}
                for arm, where in e["paper_cells"].items()}

    return [Claim(**{**e, "id": f"{e['id']}/{r}", "row": str(r), "statement": e["statement"].replace("{row}", str(r)),
                     "paper_cells": cells_for(str(r))}) for r in rows]


@lru_cache(maxsize=None)
def load(path: str | None = None) -> tuple[Claim, ...]:
    """The claims of ``claims.yaml`` (or another file of the same form), one per row."""
    import yaml

    doc = yaml.safe_load(Path(path or DATA).read_text(encoding="utf-8"))
    defaults = dict(doc.get("defaults") or {})
    out = [c for entry in doc["claims"] for c in _expand(dict(entry), defaults)]
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"claims.yaml: duplicate claim id(s) {dup}")
    return tuple(out)


CLAIMS: tuple[Claim, ...] = load()


def get(claim_id: str) -> Claim:
    """The claim with this id (``"blv-t1/r50-psp"``)."""
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    close = [c.id for c in CLAIMS if claim_id.split("/")[0] in c.id][:8]
    raise ClaimError(f"no claim {claim_id!r}" + (f"; did you mean one of {close}?" if close else
                                                 f"; see blvnb/claims.yaml ({len(CLAIMS)} claims)"))


def for_table(source: str, row: str | None = None) -> list[Claim]:
    """The claims decided by the runs of a results table (and row)."""
    return [c for c in CLAIMS if c.source == source and (row is None or c.row == row)]


def verdict(claim_id: str, values: Mapping[str, Sequence[float] | float], *, profile: str,
            seeds: Sequence[int] | None = None, **kw) -> Verdict:
    """``get(claim_id).evaluate(values, profile=..., seeds=...)``."""
    return get(claim_id).evaluate(values, profile=profile, seeds=seeds, **kw)


# --- verdicts ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """A claim's outcome in one profile, with the evidence it was decided on."""

    claim: Claim
    profile: str
    outcome: str
    seeds: tuple[int, ...]
    tests: tuple[PairedTest, ...]
    values: Mapping[str, tuple[float, ...]]
    version: str
    chapter: str | None = None
    note: str = ""

    @property
    def label(self) -> str:
        return self.outcome

    @property
    def holds(self) -> bool | None:
        return {"reproduced": True, "not reproduced": False}.get(self.outcome)

    @property
    def anchor(self) -> str:
        return "verdict-" + re.sub(r"[^0-9a-z]+", "-", self.claim.id.lower()).strip("-")

    @property
    def status_link(self) -> str:
        """An HTML link to this claim's row on the book's status page (:func:`status_link`)."""
        return status_link(self.claim.id)

    @property
    def would_run(self) -> str:
        return self.claim.runs_in

    def to_dict(self) -> dict:
        c = self.claim
        return {"claim": c.id, "kind": c.kind, "paper": c.paper, "table": c.table, "row": c.row, "statement": c.statement,
                "metric": c.metric, "rule": c.rule, "verdict": self.outcome, "profile": self.profile,
                "seeds": list(self.seeds), "tests": [t.to_dict() for t in self.tests],
                "values": {a: list(v) for a, v in self.values.items()}, "version": self.version,
                "chapter": self.chapter, "would_run": c.runs_in, "note": self.note}

    def summary(self) -> str:
        """Our numbers in one line: each arm's mean over seeds."""
        if not self.values:
            return "—"
        return ", ".join(f"{a} {_fmt(float(np.mean(v)), sign=False)}" for a, v in self.values.items())

    def _repr_markdown_(self) -> str:
        c = self.claim
        where = (f"{c.paper.upper()} {c.table}" + (f", {c.row}" if c.row else "") + "; ") if c.id else ""
        what = "Implementation check" if c.kind == "check" else "Verdict"
        lines = ([f'<span id="{self.anchor}"></span>', ""] if c.id else []) + [
            f"**{what} ({where}profile `{self.profile}`): {MARKS[self.outcome]} {self.outcome}** — {c.statement}",
            "", f"*Rule:* {c.rule}."]
        if self.outcome == "not run":
            lines += ["", f"Not run in the `{self.profile}` profile; the `{c.runs_in}` profile's chapter runs it."]
        if self.tests:
            seeds = ", ".join(str(s) for s in self.seeds)
            lines += ["", f"| test | per seed (seeds {seeds}) | mean | 95 % interval | claimed | outcome |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for t in self.tests:
                lines.append(f"| {t.label} | {', '.join(_fmt(d) for d in t.differences)} | {_fmt(t.mean)} | "
                             f"[{_fmt(t.interval[0])}, {_fmt(t.interval[1])}] | "
                             f"{'>' if t.direction == 'above' else '<'} {_fmt(t.threshold, sign=False)} | {t.outcome} |")
        if self.values:
            lines += ["", "Arms (mean over seeds): " + self.summary() + "."]
        if self.note:
            lines += ["", f"*Note:* {self.note}"]
        lines += ["", (f"Claim `{c.id}`; " if c.id else "") + f"blvnb {self.version}."
                  + (f" Every claim of both papers, in every profile: {self.status_link}." if c.id else "")]
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"[{self.profile}] {self.outcome}: {self.claim.statement} (rule: {self.claim.rule})"


#: The book's status page (``book/reproduction.md``) as a chapter's page links to it: verdicts are shown in
#: the executed chapters, ``book/generated/<chapter>.html``, one folder below it. A raw HTML link (as the
#: status page links back), so that MyST passes it through rather than resolving it as a document.
STATUS_PAGE = "../reproduction.html"


def status_anchor(claim_id: str) -> str:
    """The id of the claim's row on the status page (``blvnb.reproduce.render_status`` writes it)."""
    return "status-" + re.sub(r"[^0-9a-z]+", "-", claim_id.lower()).strip("-")


def status_link(claim_id: str, text: str = "the reproduction status") -> str:
    return f'<a href="{STATUS_PAGE}#{status_anchor(claim_id)}">{text}</a>'


def verdict_dir(root: str | Path | None = None) -> Path:
    """Where :func:`save` writes: ``$BLVNB_VERDICTS``, else ``<checkout>/book/generated/verdicts``."""
    env = os.environ.get("BLVNB_VERDICTS")
    if env:
        return Path(env)
    if root is None:
        from blvnb.paths import repo_root

        try:
            root = repo_root()
        except BlvnbError:
            root = Path.cwd()
    return Path(root) / "book" / "generated" / "verdicts"


def save(v: Verdict, directory: str | Path | None = None) -> Path | None:
    """Write a verdict as JSON under ``<directory>/<profile>/<claim id>.json`` for the status page.

    Verdicts of ad-hoc claims (not in :data:`CLAIMS`) are not saved (returns None)."""
    from blvnb.io import write_json_atomic

    if v.claim.id not in {c.id for c in CLAIMS}:
        return None
    path = Path(directory or verdict_dir()) / v.profile / (v.claim.id.replace("/", "__") + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, v.to_dict())
    return path


# --- helpers kept for the chapters ----------------------------------------------------------------

def every_seed_greater(claim: str, a: Sequence[float], b: Sequence[float], *, profile: str, a_name: str,
                       b_name: str, seeds: Sequence[int] | None = None, margin: float = 0.0) -> Verdict:
    """An observation about our data (not a paper's claim): ``a − b > margin`` in *every* seed.

    Reproduced when every paired difference exceeds the margin, not reproduced when one does not,
    inconclusive with no seeds; the interval is shown as evidence."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    rule = f"{a_name} − {b_name} > {margin:g} in every seed ({d.size} seed{'s' if d.size != 1 else ''})"
    ad_hoc = Claim(id="", paper="blv", table="—", statement=claim, source="", metric=f"{a_name} vs {b_name}",
                   comparison="greater", arms=(a_name, b_name), margin=float(margin), min_seeds=1, rule_text=rule)
    v = ad_hoc.evaluate({a_name: a, b_name: b}, profile=profile, seeds=seeds)
    outcome = "inconclusive" if d.size == 0 or np.isnan(d).any() else (
        "reproduced" if bool((d > margin).all()) else "not reproduced")
    return replace(v, outcome=outcome, tests=tuple(replace(t, outcome=outcome) for t in v.tests))


def alignment_verdict(kl: Mapping[str, Sequence[float]], *, profile: str, seeds: Sequence[int] | None = None,
                      aligned: str = "DARS", baseline: str = "ST", tol: float = 1e-3) -> Verdict:
    """The implementation check ``dars-alignment-synthetic`` (DARS Sec. 3.2, Algorithm 1) on given teacher
    outputs: ``aligned``'s KL to the prior is below ``tol`` and ``baseline``'s is above it. A check, not a
    reproduction of Table 5: the teacher is built to lean toward the frequent classes."""
    c = replace(get("dars-alignment-synthetic"), arms=(aligned, baseline), constant=float(tol))
    return c.evaluate(kl, profile=profile, seeds=seeds)


__all__ = ["CLAIMS", "Claim", "ClaimError", "KINDS", "OUTCOMES", "PairedTest", "Verdict", "alignment_verdict", "every_seed_greater",
           "for_table", "get", "load", "save", "t_interval", "verdict", "verdict_dir"]
