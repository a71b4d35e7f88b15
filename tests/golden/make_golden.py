"""Write tests/golden/runs_smoke.json: what one smoke run per strategy computes (seed 0, on the CPU).

The file freezes, per case of :data:`CASES`, the loss history (every logged statistic, every step), the final
metrics and the optimiser's parameter groups as the record states them (as a set). ``tests/test_golden_runs.py`` runs
the same cases and compares to 1e-6. A refactor must leave these values alone; regenerate the file only when
a change of what a run computes is deliberate (and say so in the commit)::

    .venv/bin/python tests/golden/make_golden.py            # all cases
    .venv/bin/python tests/golden/make_golden.py uda-blv    # one case, the others kept
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).with_name("runs_smoke.json")

#: case name → RunConfig fields on top of the smoke profile (seed 0, device cpu); each case covers one
#: piece the strategies share or differ in: losses and σ(t), main + auxiliary outputs by the recipe's
#: placement, parameter groups, the EMA teacher, Eq. (4), DARS's rounds, UDA's terms
CASES: dict[str, dict] = {
    "sup-ce": {},
    "sup-blv-sigma-schedule": dict(loss="blv", loss_options={"sigma_schedule": 6.0}),
    "sup-psp-blv": dict(model="r50-psp@small", loss="blv", loss_options={"sigma": 4.0}),  # aux FCN keeps CE
    "sup-ocr-blv": dict(model="hr18-ocr@small", loss="blv"),  # BLV on the soft regions at 1.0
    "sup-knet-blv": dict(model="swint-knet@small", loss="blv"),  # BLV on every stage
    "sup-segformer-la": dict(model="mitb0-segformer@small", loss="la"),  # head ×10, no decay on norms
    "mt-blv-eq4": dict(strategy="mean-teacher", labeled_fraction="1/4", loss="blv", iters=7,
                       strategy_options={"ema_horizon": "scaled"}),  # one epoch end: Eq. (4)
    "mt-psp-ce": dict(strategy="mean-teacher", labeled_fraction="1/4", model="r50-psp@small",
                      strategy_options={"ema_buffers": "student"}),
    "dars-round0": dict(strategy="dars-rounds", labeled_fraction="1/8"),
    "dars-round1": dict(strategy="dars-rounds", labeled_fraction="1/8", strategy_options={"round": 1}),
    "dars-round0-psp-focal": dict(strategy="dars-rounds", labeled_fraction="1/8", model="r50-psp@small",
                                  loss="focal"),
    "uda-ce": dict(strategy="uda", dataset="gta5", target="cityscapes"),
    "uda-blv-sigma-schedule": dict(strategy="uda", dataset="gta5", target="cityscapes", loss="blv",
                                   loss_options={"sigma_schedule": 6.0}),
    "uda-gcl": dict(strategy="uda", dataset="gta5", target="cityscapes", loss="gcl"),
    "uda-rs": dict(strategy="uda", dataset="gta5", target="cityscapes", loss="rs"),
    "uda-daformer-blv": dict(strategy="uda", dataset="gta5", target="cityscapes", model="mitb5-daformer@small",
                             loss="blv"),
    "uda-hrda": dict(strategy="uda", dataset="gta5", target="cityscapes", model="mitb5-hrda@small"),
    "uda-dars-sd": dict(strategy="uda", dataset="gta5", target="cityscapes", strategy_options={"pseudo": "dars-sd"}),
}

METRICS = ("mIoU", "iou", "pixel_acc", "mAcc")


def config(name: str):
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("smoke", device="cpu", progress=False, seed=0, **CASES[name])


def values(rec: dict) -> dict:
    """The frozen part of a run's record: history, final metrics, optimiser groups (JSON: NaN as None)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None if math.isnan(v) else str(v)
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in sorted(v.items())}
        return v

    # the groups as a set, listed by (lr_mult, decay_mult): their order changes no update (each parameter's
    # step is its own), and the lr the history logs (the first group's) is frozen with the history
    groups = sorted(rec["optimizer"]["param_groups"], key=lambda g: (g["lr_mult"], g["decay_mult"], g["params"]))
    return clean({"history": rec["history"], "metrics": {k: rec["metrics"][k] for k in METRICS},
                  "param_groups": groups})


@contextlib.contextmanager
def isolated_results(folder: str | Path):
    """Runs write under ``folder`` and see no committed record (a committed record would not train)."""
    saved = {k: os.environ.get(k) for k in ("BLVNB_RESULTS", "BLVNB_RECORDS")}
    os.environ["BLVNB_RESULTS"] = str(Path(folder) / "results")
    os.environ["BLVNB_RECORDS"] = str(Path(folder) / "records")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compute(name: str) -> dict:
    from blvnb.experiments.runs import run

    return values(run(config(name)))


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    out = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() and names else {}
    with tempfile.TemporaryDirectory(prefix="blvnb-golden-") as tmp, isolated_results(tmp):
        for name in CASES:  # in order: round 1 finds round 0's record
            if not names or name in names:
                out[name] = compute(name)
                print("computed", name, flush=True)
    GOLDEN.write_text(json.dumps({k: out[k] for k in CASES if k in out}, indent=1, sort_keys=True) + "\n")
    print("wrote", GOLDEN)


if __name__ == "__main__":
    main(sys.argv[1:])
