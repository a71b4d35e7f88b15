"""Write tests/golden/plan_keys.json: the run key of every run in the smoke and quick plans.

Run it only when a change of what a smoke or quick run computes is deliberate (every quick record of a
changed key is trained again): ``.venv/bin/python tests/golden/make_golden_keys.py``.
"""

import json
from pathlib import Path

from blvnb.experiments.execute import plan_for


def plan_keys(profile: str) -> dict[str, str]:
    """key → a short description of the run (for a reader of a failing test)."""
    out = {}
    for r in plan_for(profile).order():
        c = r.cfg
        out[r.key] = f"{c.strategy} {c.model} {c.loss} {c.dataset} {c.labeled_fraction} seed {c.seed}"
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("plan_keys.json")
    path.write_text(json.dumps({p: plan_keys(p) for p in ("smoke", "quick")}, indent=1, sort_keys=True) + "\n")
    print("wrote", path)
