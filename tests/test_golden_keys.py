"""Freeze what the smoke and quick plans compute: every run key they had stays a key of the plan.

A refactor must not retrain a quick record. Runs may be added to a plan (their keys are new); a golden key
that disappears means a run now computes something else (or is no longer planned) — if that is deliberate,
regenerate the file with ``tests/golden/make_golden_keys.py`` and say why in the commit.
"""

import json
from pathlib import Path

import pytest

GOLDEN = json.loads((Path(__file__).parent / "golden" / "plan_keys.json").read_text())


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_every_golden_key_is_still_planned(profile):
    from golden.make_golden_keys import plan_keys

    now = plan_keys(profile)
    gone = {k: v for k, v in GOLDEN[profile].items() if k not in now}
    assert not gone, f"{len(gone)} {profile} run keys changed or left the plan: " + "; ".join(
        f"{k} ({v})" for k, v in sorted(gone.items(), key=lambda kv: kv[1])[:10])


def test_golden_is_not_empty():
    assert len(GOLDEN["smoke"]) > 20 and len(GOLDEN["quick"]) > 50
