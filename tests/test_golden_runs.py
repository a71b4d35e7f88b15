"""Freeze what a run computes: one smoke run per strategy (and per shared piece) at seed 0 on the CPU.

Loss history, final metrics and optimiser groups must equal ``tests/golden/runs_smoke.json`` to 1e-6. A
refactor of the strategies must not change them; when a change of what a run computes is deliberate,
regenerate with ``tests/golden/make_golden.py`` and say why in the commit.
"""

import json
import math
import os

import pytest

from golden.make_golden import CASES, GOLDEN, compute, isolated_results

EXPECTED = json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cache = os.environ.get("BLVNB_TEST_CACHE")
    saved = os.environ.get("BLVNB_CACHE")
    if cache:
        os.environ["BLVNB_CACHE"] = cache
    else:
        os.environ["BLVNB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    with isolated_results(tmp_path_factory.mktemp("golden")):
        yield
    if saved is None:
        os.environ.pop("BLVNB_CACHE", None)
    else:
        os.environ["BLVNB_CACHE"] = saved


def differences(want, got, where="") -> list[str]:
    """Where ``got`` differs from ``want`` (numbers to 1e-6, relative or absolute)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing" for k in want if k not in got]
        out += [f"{where}.{k}: not in the golden file" for k in got if k not in want]
        for k in want:
            if k in got:
                out += differences(want[k], got[k], f"{where}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: length {len(got)}, golden {len(want)}"]
        return [d for i, (a, b) in enumerate(zip(want, got)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(want, (int, float)) and isinstance(got, (int, float)) and not isinstance(want, bool):
        return [] if math.isclose(want, got, rel_tol=1e-6, abs_tol=1e-6) else [f"{where}: {got!r}, golden {want!r}"]
    return [] if want == got else [f"{where}: {got!r}, golden {want!r}"]


def test_every_case_has_golden_values():
    assert sorted(EXPECTED) == sorted(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_run_computes_its_golden_values(results, name):
    diff = differences(EXPECTED[name], compute(name))
    assert not diff, f"{name}: {len(diff)} values changed: " + "; ".join(diff[:8])


def test_differences_catch_a_changed_value():
    want = {"history": {"loss": [1.0, 2.0]}, "metrics": {"iou": [0.5, None]}}
    assert differences(want, json.loads(json.dumps(want))) == []
    assert differences(want, {"history": {"loss": [1.0, 2.00001]}, "metrics": {"iou": [0.5, None]}})
    assert differences(want, {"history": {"loss": [1.0]}, "metrics": {"iou": [0.5, 0.1]}})
