"""Markdown the book's hand-written pages include instead of typing measured numbers.

The pages under ``book/`` are prose; where they show a number that the code or a benchmark produces, they
include a fragment written here (MyST ``{include}`` of ``book/generated/includes/<name>.md``), so the number
is the one the repository computes today, not the one typed when the page was written:

* ``quick_calibration_*.md`` (``book/quick_profile.md``): the tables of
  ``bench/results/quick_calibration.json``, the committed output of ``bench/quick_calibration.py``, with
  the command, commit and machine that produced it.
* ``model_params*.md`` (``book/models.md``): parameter counts of every registry entry, built on the meta
  device (no memory, no weights), and of the parts the references in
  :mod:`blvnb.models.param_references` count.
* ``plan_budget_*.md`` (``book/intro.md``): the GPU-hours of the gpu and paper profiles per table and in all,
  and the GPUs that finish each in a working day, from the plan's estimate (:func:`budget_fragments`).

:func:`write_includes` writes them all; ``blvnb reproduce`` calls it before every book build
(:func:`blvnb.reproduce.build_book`), and ``python -m blvnb.pages`` does it alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from blvnb.errors import BlvnbError

INCLUDES = Path("book") / "generated" / "includes"
CALIBRATION = Path("bench") / "results" / "quick_calibration.json"
#: the head − tail gap and the tail mIoU the quick profile was meant to reach (book/quick_profile.md)
TARGETS = {"head_minus_tail": 20.0, "tail": 15.0}
#: the paper's gains (BLV Table 1: +1 to +2 mIoU, +2 to +4 tail mIoU), set against our thresholds
PAPER_GAINS = {"mIoU_blv": (1.0, 2.0), "mIoU_tail_blv": (2.0, 4.0)}
KEYS = ("mIoU", "mIoU_head_blv", "mIoU_tail_blv")
LABELS = {"mIoU": "mIoU", "mIoU_head_blv": "head mIoU", "mIoU_tail_blv": "tail mIoU"}


def _f(x: float, nd: int = 2, sign: bool = False) -> str:
    """A number as the tables print it: fixed decimals, a true minus sign."""
    s = f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"
    return s.replace("-", "−")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def read_calibration(path: Path) -> dict:
    """The benchmark's JSON; a missing or unreadable file is a :class:`BlvnbError` that says how to make it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BlvnbError(f"{path} is missing: run `python bench/quick_calibration.py --out {CALIBRATION}` "
                         "and commit it (book/quick_profile.md shows its numbers)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise BlvnbError(f"{path} is not a readable benchmark JSON ({e})") from None
    for key in ("summary", "seeds", "classes", "tail_classes", "configs", "timings", "command", "commit"):
        if key not in data:
            raise BlvnbError(f"{path} has no {key!r}: it was not written by bench/quick_calibration.py")
    return data


def _t(level: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(level, df))


def calibration_fragments(data: dict) -> dict[str, str]:
    """The fragments of ``book/quick_profile.md``, by name, from the JSON of ``bench/quick_calibration.py``."""
    s, seeds, classes = data["summary"], data["seeds"], data["classes"]
    n = len(seeds)
    rows = s["per_seed"]
    ce_cfg = data["configs"]["ce"]["config"]
    recipe = data["configs"]["ce"].get("recipe", {})
    pre = ce_cfg.get("pretraining") or {}
    out: dict[str, str] = {}

    commit = f"`{(data['commit'] or 'unknown')[:10]}`" + (" with uncommitted changes" if data.get("uncommitted_changes")
                                                          else "")
    m = data.get("machine", {})
    out["provenance"] = (
        f"Measured by `{data['command']}` at commit {commit} on {data.get('date', 'an unknown date')}: "
        f"{m.get('cpu_count', '?')} CPU cores ({m.get('processor', '?')}), torch {m.get('torch', '?')}, "
        f"{n} seeds ({', '.join(map(str, seeds))}), the runs of BLV Table 1's two arms in the `{data['profile']}` "
        f"profile. Source: `{CALIBRATION}`.\n")

    lr = ce_cfg.get("lr") if ce_cfg.get("lr") is not None else recipe.get("lr")
    wd = ce_cfg.get("weight_decay") if ce_cfg.get("weight_decay") is not None else recipe.get("weight_decay")
    size, crop, sr = ce_cfg["size"], ce_cfg["crop"], ce_cfg["scale_range"]
    start = ("the profile's toy pretraining (below), the whole model" if ce_cfg.get("pretrained") == "toy"
             else f"{ce_cfg.get('pretrained') or 'random initialisation'}")
    out["settings"] = _table(["setting", "value"], [
        ["data", f"toycity, Cityscapes style, {size[0]}×{size[1]} images, {ce_cfg['n_train']} train and "
                 f"{ce_cfg['n_val']} val images (data seed {ce_cfg['data_seed']})"],
        ["model", f"`{ce_cfg['model']}`"],
        ["training crop", f"{crop[0]}×{crop[1]}, random scale {sr[0]:g}–{sr[1]:g}, horizontal flip"],
        ["schedule", f"{recipe.get('optimizer', '?').upper()}, lr {lr:g} (the model's recipe) with "
                     f"{recipe.get('schedule', '?')} decay, weight decay {wd:g}, batch {ce_cfg['batch_size']}, "
                     f"{ce_cfg['iters']} iterations, {_threads(ce_cfg['threads'])}"],
        ["evaluation", f"{ce_cfg['eval_mode']} {size[0]}×{size[1]} images, mIoU over the {len(classes)} classes; "
                       f"tail and head are BLV's {len(data['tail_classes'])} tail classes and the other "
                       f"{len(classes) - len(data['tail_classes'])}"],
        ["start", start],
        ["BLV", ", ".join(f"{k} = {v}" for k, v in data["configs"]["blv"]["config"]["loss_options"].items())
                + " (the other options at their defaults: Algorithm 1's clamp)"],
    ])
    passes = ce_cfg["iters"] * ce_cfg["batch_size"] / ce_cfg["n_train"]
    out["settings"] += (f"\nEach run sees {ce_cfg['iters'] * ce_cfg['batch_size']} crops, {passes:.1f} passes over "
                        f"the {ce_cfg['n_train']} training images.\n")

    tm = data["timings"]
    if pre:
        out["pretraining"] = (
            f"The profile's pretraining: {pre.get('n_train')} `{pre.get('dataset')}`-style toycity images of data seed "
            f"{pre.get('data_seed')}, {pre.get('crop', crop)[0]}×{pre.get('crop', crop)[1]} crops, batch "
            f"{pre.get('batch_size')}, {pre.get('iters')} iterations, lr {pre.get('lr')}, "
            f"{_threads(pre.get('threads', 1))}. "
            + (f"Its record's training time is {tm['pretraining_train_seconds'] / 60:.1f} minutes of wall time"
               + (f", over two or more attempts (the last resumed at iteration {tm['pretraining_resumed_from']})"
                  if tm.get("pretraining_resumed_from") else "")
               + " on the shared machine of this measurement. " if "pretraining_train_seconds" in tm else "")
            + f"The bench process that {'finished' if tm.get('pretraining_resumed_from') else 'ran'} it spent "
              f"{tm['pretraining_cpu']:.0f} CPU seconds ({tm['pretraining_wall'] / 60:.1f} minutes of wall time) on it "
              "and on drawing its data.\n")
    else:
        out["pretraining"] = "This measurement's runs start from no pretraining.\n"

    # the baseline
    gap = [r["ce"]["mIoU_head_blv"] - r["ce"]["mIoU_tail_blv"] for r in rows]
    out["baseline"] = _table(["", "mIoU", f"head ({len(classes) - len(data['tail_classes'])} classes)",
                              f"tail ({len(data['tail_classes'])} classes)", "head − tail"], [
        [f"mean over seeds {', '.join(map(str, seeds))}", _f(s["ce_mIoU_mean"]), _f(s["ce_mIoU_head_blv_mean"]),
         _f(s["ce_mIoU_tail_blv_mean"]), _f(s["ce_head_minus_tail_mean"], 1)],
        ["standard deviation", _f(s["ce_mIoU_sd"]), _f(s["ce_mIoU_head_blv_sd"]), _f(s["ce_mIoU_tail_blv_sd"]), ""],
    ])
    ce_iou = s["ce_iou_mean"]
    # a class absent from the validation images has no IoU (NaN in the record)
    absent = [c for j, c in enumerate(classes) if all(_nan(r["ce"]["iou"][j]) for r in rows)]
    zero = [c for j, c in enumerate(classes) if c not in absent and all(r["ce"]["iou"][j] == 0 for r in rows)]
    order = sorted((j for j, c in enumerate(classes) if c not in zero + absent), key=lambda j: -ce_iou[j])
    out["per_class"] = (f"Per class (cross entropy, mean over the {n} seeds): "
                        + ", ".join(f"{classes[j]} {ce_iou[j]:.1f}" for j in order) + "."
                        + (f" At 0 in every seed: {', '.join(zero)}." if zero else "")
                        + (f" Not in the validation images: {', '.join(absent)}." if absent else "") + "\n")
    tail = s["ce_mIoU_tail_blv_mean"]
    tails = [r["ce"]["mIoU_tail_blv"] for r in rows]
    zero_tail = [c for c in zero + absent if c in data["tail_classes"]]
    learnt = "learnable" if tail >= TARGETS["tail"] else "partly learnable" if tail > 0 else "not learnt"
    out["targets"] = (
        f"- **The long tail is {'visible' if s['ce_head_minus_tail_mean'] >= TARGETS['head_minus_tail'] else 'weak'}.** "
        f"Head minus tail is {s['ce_head_minus_tail_mean']:.1f} points ({min(gap):.1f} in the worst seed). The "
        f"target was at least {TARGETS['head_minus_tail']:g}: "
        f"{'met' if min(gap) >= TARGETS['head_minus_tail'] else 'not met in every seed'}.\n"
        f"- **The tail is {learnt}.** Tail mIoU is "
        f"{tail:.1f} ({min(tails):.1f} to {max(tails):.1f} over the seeds). The target was {TARGETS['tail']:g}: "
        f"{'met' if tail >= TARGETS['tail'] else 'not met'}."
        + (f" Of the tail classes, {', '.join(zero_tail)} stay at 0 in every seed{' or are not in the validation images' if absent else ''}, so **a tail claim in this profile is a claim about "
           f"{len(data['tail_classes']) - len(zero_tail)} of the {len(data['tail_classes'])} tail classes.**"
           if zero_tail else "") + "\n")

    # paired differences
    head = ["seed", "CE mIoU", "CE head", "CE tail", "BLV mIoU", "BLV head", "BLV tail", "BLV − CE mIoU",
            "BLV − CE head", "BLV − CE tail"]
    body = [[str(r["seed"])] + [_f(r[a][k]) for a in ("ce", "blv") for k in KEYS]
            + [_f(r["blv"][k] - r["ce"][k], sign=True) for k in KEYS] for r in rows]
    body.append(["mean"] + [_f(s[f"{a}_{k}_mean"]) for a in ("ce", "blv") for k in KEYS]
                + [_f(s[f"diff_{k}_mean"], sign=True) for k in KEYS])
    body.append(["standard deviation"] + [_f(s[f"{a}_{k}_sd"]) for a in ("ce", "blv") for k in KEYS]
                + [_f(s[f"diff_{k}_sd"]) for k in KEYS])
    out["pairs"] = _table(head, body)

    def direction(k: str) -> str:
        neg, d = s[f"diff_{k}_negative_seeds"], s[f"diff_{k}_mean"]
        lo, hi = s[f"diff_{k}_ci95"]
        where = "excludes 0" if lo > 0 or hi < 0 else "includes 0"
        return (f"BLV − CE {LABELS[k]} is {_f(d, sign=True)} (95 % interval {_f(lo, sign=True)} to "
                f"{_f(hi, sign=True)}, which {where}); BLV is below cross entropy in {neg} of the {n} seeds")

    ratio = s["ce_mIoU_sd"] / s["diff_mIoU_sd"] if s["diff_mIoU_sd"] > 0 else math.inf
    out["pairs_text"] = (
        f"The mIoU of one arm moves by {s['ce_mIoU_sd']:.2f} points (standard deviation) from seed to seed; the "
        f"difference between the arms moves by {s['diff_mIoU_sd']:.2f}, {ratio:.0f} times less. "
        + "; ".join(direction(k) for k in ("mIoU", "mIoU_tail_blv")) + ".\n")
    diffs = [(classes.index(c), s["blv_iou_mean"][classes.index(c)] - ce_iou[classes.index(c)])
             for c in data["tail_classes"] if c not in zero + absent]
    diffs.sort(key=lambda t: t[1])
    out["pairs_classes"] = (
        (f"Per tail class that the baseline learns, from the largest drop to the largest gain (mean IoU over the "
         f"seeds, cross entropy → BLV): "
         + ", ".join(f"{classes[j]} {ce_iou[j]:.1f} → {s['blv_iou_mean'][j]:.1f}" for j, _ in diffs) + ".\n")
        if diffs else "The baseline learns no tail class here.\n")

    # the smallest difference three seeds detect
    t3 = _t(0.975, 2)
    out["detect"] = _table(["difference", "sd of the per-seed difference", "smallest mean difference 3 seeds detect"],
                           [[LABELS[k], _f(s[f"diff_{k}_sd"]), _f(s[f"diff_{k}_detectable_at_3"])] for k in KEYS])
    lo_sd, hi_sd = (math.sqrt((n - 1) / _chi2(q, n - 1)) for q in (0.975, 0.025))
    gains = {"mIoU": PAPER_GAINS["mIoU_blv"], "mIoU_tail_blv": PAPER_GAINS["mIoU_tail_blv"]}
    seen = [f"{LABELS[k]} {g[0]:g} to {g[1]:g} against a threshold of {s[f'diff_{k}_detectable_at_3']:.2f}"
            + (" (above it)" if g[0] > s[f"diff_{k}_detectable_at_3"] else " (not clearly above it)")
            for k, g in gains.items()]
    out["detect_text"] = (
        f"With $t_{{0.975,2}} = {t3:.3f}$ the threshold is {t3 / math.sqrt(3):.2f} times the standard deviation of "
        f"the per-seed difference. The paper's gains set against these thresholds: {'; '.join(seen)}. The standard "
        f"deviations come from {n} seeds and are themselves uncertain: with {n - 1} degrees of freedom the 95 % "
        f"interval of a standard deviation runs from {lo_sd:.2f} to {hi_sd:.2f} times the estimate, and so do the "
        f"thresholds. A verdict near a threshold should say so.\n")

    out["scratch"] = scratch_fragment(data)

    lo_cpu, hi_cpu = tm["cpu_per_run_range"]
    out["time"] = (
        f"One quick run (training plus evaluation), in CPU seconds of the measuring process "
        f"(`time.process_time()`), median over the {2 * n} runs: **{tm['cpu_per_run_median']:.0f} s** (range "
        f"{lo_cpu:.0f}–{hi_cpu:.0f} s); the records' training wall time, median: {tm['train_seconds_median']:.0f} s. "
        f"The runs compute with {_threads(ce_cfg['threads'])}, so on an otherwise idle core the CPU time is also the "
        f"wall time.\n")
    return out


def scratch_fragment(data: dict) -> str:
    """Fine-tuned from the toy pretraining against trained from random initialisation: BLV − CE, seed-paired,
    with its 95 % interval, beside each other (``data["from_scratch"]`` of ``bench/quick_calibration.py``)."""
    scratch = data.get("from_scratch")
    if not scratch:
        return ("This measurement has no from-scratch runs (`bench/quick_calibration.py --no-from-scratch`): "
                "whether BLV's toy result depends on the fitted start is not measured here.\n")
    n, st = len(data["seeds"]), scratch["settings"]
    rows, verdicts = [], {}
    for start, s in (("fine-tuned from the toy pretraining", data["summary"]),
                     (f"from random initialisation ({st['iters']} steps, batch {st['batch_size']}, lr {st['lr']:g})",
                      scratch["summary"])):
        cells = [start]
        for k in ("mIoU", "mIoU_tail_blv"):
            lo, hi = s[f"diff_{k}_ci95"]
            cells += [f"{_f(s[f'ce_{k}_mean'])} → {_f(s[f'blv_{k}_mean'])}",
                      f"{_f(s[f'diff_{k}_mean'], sign=True)} [{_f(lo, sign=True)}, {_f(hi, sign=True)}]"]
            verdicts.setdefault(k, []).append("above 0" if lo > 0 else "below 0" if hi < 0 else "straddles 0")
        rows.append(cells)
    table = _table(["start", "mIoU, CE → BLV", "BLV − CE mIoU [95 %]", "tail mIoU, CE → BLV",
                    "BLV − CE tail [95 %]"], rows)
    text = "; ".join(f"for {LABELS[k]} the interval is {v[0]} fine-tuned and {v[1]} from scratch"
                     for k, v in verdicts.items())
    opposite = [k for k, v in verdicts.items() if {v[0], v[1]} == {"above 0", "below 0"}]
    unclear = [k for k, v in verdicts.items() if k not in opposite and v[0] != v[1]]
    if opposite:
        end = (f"The two starts point in opposite directions for {' and '.join(LABELS[k] for k in opposite)}: at toy "
               "scale what BLV does depends on where training starts, so the quick verdicts speak about fine-tuning "
               "a fitted classifier only.")
    elif unclear:
        end = (f"They do not contradict each other; for {' and '.join(LABELS[k] for k in unclear)} one start's "
               "interval straddles 0, so three seeds cannot say whether that start changes the direction.")
    else:
        end = "The two starts agree on both: the toy result does not hinge on starting from a fitted classifier."
    return table + f"\nMeans over the {n} seeds, seed-paired, in points. {text[0].upper() + text[1:]}. {end}\n"


def sweep_fragment(profile: str = "quick") -> str:
    """Why the extra points of a sweep run once in ``profile``, with what every seed would cost: the plan's
    own counts and estimate (:func:`blvnb.experiments.execute.sweep_cost`)."""
    from blvnb.experiments import execute, tables
    from blvnb.experiments.profiles import get_profile

    p, k = get_profile(profile), tables.QUICK_SWEEP_SEEDS
    c = execute.sweep_cost(profile)
    first = "the first seed" if k == 1 else f"the first {k} seeds"
    if not p.subset or k >= len(p.seeds) or c["runs_all_seeds"] == c["runs"]:
        return f"In the `{profile}` profile every arm of every table runs at each of its {len(p.seeds)} seeds.\n"
    return (f"In the `{profile}` profile the arms a table's headline claim compares run at all {len(p.seeds)} "
            f"seeds; the extra points of a sweep run at {first} only (`tables.QUICK_SWEEP_SEEDS`), so a claim that "
            f"compares sweep points reads *inconclusive* for want of seeds. Every point at all {len(p.seeds)} "
            f"seeds would make the plan **{c['runs_all_seeds']} runs instead of {c['runs']}**: by the plan's "
            f"estimate {c['est_seconds_all_seeds'] / 60:.0f} instead of {c['est_seconds'] / 60:.0f} minutes of "
            "runs one after the other, more than this profile's budget leaves (the time the book takes is "
            "above). A cheaper run per point, not fewer seeds, is what would pay for it.\n")


def _threads(k: int) -> str:
    return f"{k} thread" + ("" if k == 1 else "s")


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _chi2(q: float, df: int) -> float:
    from scipy.stats import chi2

    return float(chi2.ppf(q, df))


def model_param_fragments() -> dict[str, str]:
    """Parameter counts built from the registry on the meta device (millions): every entry at 19 classes in
    both variants, and the references' tables of :mod:`blvnb.models.param_references` with our counts."""
    from blvnb.models import param_references as refs
    from blvnb.models.registry import list_models

    rows = [[f"`{name}`", f"{refs.count(name, 19):.2f}", f"{refs.count(name, 19, variant='small'):.2f}"]
            for name in list_models()]
    out = {"registry": _table(["model", "paper variant (M)", "small variant (M)"], rows)}
    for kind in ("published", "derived"):
        body = []
        for r in (x for x in refs.REFERENCES if x.kind == kind):
            ours = refs.count(r.model, r.classes, r.part)
            classes = "—" if r.part in ("backbone", "vit", "kernel updates") else str(r.classes)
            ref = f"{r.reference:g}" if r.reference == round(r.reference, 2) else f"{r.reference:.2f}"
            body.append([r.name, classes, ref,
                         r.source, f"{ours:.2f}", f"{ours / r.reference:.3f}"])
        out[kind] = _table(["model (part)", "classes", "reference", "source" if kind == "published" else
                            "how it is made up", "ours", "ours / ref."], body)
    return out


def _hours(seconds: float) -> str:
    h = seconds / 3600.0
    return f"{h:,.1f}" if h >= 0.95 else f"{h:.2f}"


def budget_fragments(profiles: tuple[str, ...] | None = None) -> dict[str, str]:
    """What the gpu and paper profiles cost, from the plan's estimate (:func:`blvnb.experiments.execute.budget`):
    per profile its GPU-hours one after the other, its longest chain of runs and the GPUs that finish it in a
    working day; and one table of GPU-hours per table of the papers. ``profiles``: default every profile whose
    runs are planned for GPUs (``Profile.machine``)."""
    from blvnb.experiments import execute, tables
    from blvnb.experiments.profiles import PROFILES

    if profiles is None:
        profiles = tuple(name for name, p in PROFILES.items() if p.machine == "gpu")
    out, per = {}, {}
    for prof in profiles:
        b = execute.budget(execute.plan_for(prof))
        per[prof] = b["tables"]
        text = (f"**`{prof}`**: {b['runs']} distinct runs, estimated **{_hours(b['total_seconds'])} GPU-hours** one "
                f"after the other; the longest chain of runs that must follow each other (a DARS round after its "
                f"teacher) takes {_hours(b['longest_chain_seconds'])} h. ")
        if b["gpus_for_day"]:
            text += (f"**{b['gpus_for_day']} GPUs** finish it in a working day of {b['day_hours']:g} h "
                     f"({_hours(b['makespan_seconds'])} h, one run per GPU, each started as `blvnb runs execute "
                     f"--executor gpus` starts it).")
        else:
            import math

            n = max(1, math.ceil(b["total_seconds"] / max(b["longest_chain_seconds"], 1.0)))
            text += (f"No number of GPUs finishes it in a working day of {b['day_hours']:g} h with one GPU per run: "
                     f"that chain alone is longer. On {n} GPUs it takes about "
                     f"{_hours(execute.makespan(execute.plan_for(prof), n))} h.")
        out[prof] = text + "\n"
    out["source"] = (f"Estimates, not measurements: {execute.GPU_RATES_SOURCE}, times each run's iterations, "
                     "plus its evaluation and a DARS round's labelling (`blvnb.experiments.execute.est_seconds`); "
                     "`blvnb runs plan --profile P` lists them per run, `--time-limit MIN` the jobs of a cluster. "
                     "A record's `train_seconds` is the truth once a run has trained.\n")
    ids = [t for t in tables.list_tables() if any(t in per[p] for p in profiles)]
    rows = [[f"`{t}`", tables.get_table(t).title] + [_hours(per[p].get(t, 0.0)) for p in profiles] for t in ids]
    out["tables"] = _table(["table", "what it shows"] + [f"`{p}` GPU-hours" for p in profiles], rows)
    return out


#: fragment groups: name prefix → function of the repository root returning {suffix: Markdown}
SOURCES: dict[str, Callable[[Path], dict[str, str]]] = {
    "quick_calibration": lambda root: calibration_fragments(read_calibration(root / CALIBRATION)),
    "quick_sweeps": lambda root: {"seeds": sweep_fragment("quick")},
    "model_params": lambda root: model_param_fragments(),
    "plan_budget": lambda root: budget_fragments(),
}


def write_includes(root: Path | None = None) -> list[Path]:
    """Write every fragment to ``book/generated/includes/<prefix>_<name>.md``; returns the paths."""
    from blvnb.io import atomic_write
    from blvnb.paths import repo_root

    root = Path(root) if root is not None else repo_root()
    out_dir = root / INCLUDES
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for prefix, make in SOURCES.items():
        for name, text in make(root).items():
            path = out_dir / f"{prefix}_{name}.md"
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write_includes():
        print(p)
