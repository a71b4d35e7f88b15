"""Profiles are data: what differs between smoke, quick, gpu and paper is a field of the Profile, and no code
or notebook asks for a profile by its name (blvnb.experiments.profiles)."""

import ast
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from blvnb.errors import ConfigError
from blvnb.experiments import execute, profiles, rehearse, runs, tables
from blvnb.experiments.profiles import PROFILES, ChapterSizes, Profile, get_profile

ROOT = Path(__file__).resolve().parents[1]
NAMES = set(PROFILES)
#: names no other setting uses: a comparison with one of these is a comparison with a profile's name
ONLY_PROFILE = {"smoke", "quick"}
#: the fields this issue added: what a table runs and where, never part of a run's key
ADDED = ("machine", "model_variant", "subset", "paper_recipes", "where", "chapter")
PROFILE_FIELDS = {f.name for f in fields(Profile)} - {"name"}


def _strings(node) -> list[str] | None:
    """The strings of a tuple / list / set literal (None if it holds anything else)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def _names_profile(node, source: str) -> bool:
    """Whether an operand is a profile's name (``profile``, ``cfg.profile``, ``prof.name``, ...). A field of a
    profile (``prof.machine``) is data, not its name."""
    if isinstance(node, ast.Attribute) and node.attr in PROFILE_FIELDS:
        return False
    text = ast.get_source_segment(source, node) or ""
    return bool(re.search(r"\bprofile\b|prof\w*\.name\b", text))


def profile_name_uses(source: str, where: str) -> list[str]:
    """Each place in ``source`` that tests a profile's name: a comparison with a profile name (``profile ==
    "paper"``, ``profile in ("smoke", "quick")``, ``x == "quick"``), or a table of profile names (a tuple or
    a dict keyed by them: ``SUBSET_PROFILES``, ``PROFILE_VARIANT``)."""
    out = []

    def flag(node):
        out.append(f"{where}:{node.lineno}: {ast.get_source_segment(source, node)}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            consts = set()
            for o in operands:
                if isinstance(o, ast.Constant) and isinstance(o.value, str):
                    consts.add(o.value)
                consts.update(_strings(o) or ())
            if consts & ONLY_PROFILE or (consts & NAMES and any(_names_profile(o, source) for o in operands)):
                flag(node)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            s = _strings(node)
            if s and len(s) >= 2 and set(s) <= NAMES:
                flag(node)
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if len(keys) == len(node.keys) >= 2 and set(keys) <= NAMES:
                flag(node)
    return out


def _code_cells(nb: Path):
    for i, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            yield i, "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))


def test_the_detector_finds_each_kind_of_name_test():
    bad = ['if profile == "paper": pass', 'x = 8 if profile == "smoke" else 16',
           'device = "cpu" if cfg.profile in ("smoke", "quick") else "gpu"',
           'paper = getattr(cfg, "profile", None) == "paper"', 'ok = prof.name != "gpu"', 'SUBSET = ("smoke", "quick")',
           'REHEARSED = ("paper", "gpu")', 'VARIANT = {"smoke": "small", "quick": "small", "gpu": "paper", "paper": "paper"}',
           'if p.name == "quick": pass']
    for src in bad:
        assert profile_name_uses(src, "t"), src
    fine = ['small = prof.subset', 'device = prof.machine', 'gpu = prof.machine == "gpu"',
            'gpu = get_profile(cfg.profile).machine == "gpu"', 'clamp == "paper"', 'VARIANTS = ("paper", "small")',
            'MACHINES = ("cpu", "gpu")', 'profile = profile or "quick"', 'where = profile not in (None, "None")',
            'd = {"paper": 1, "table": 2}']
    for src in fine:
        assert profile_name_uses(src, "t") == [], src


def test_no_code_or_notebook_compares_a_profile_name():
    """Everything that differs between the profiles is a field of the Profile (or of a table's recipe)."""
    found = []
    for path in sorted((ROOT / "blvnb").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py")):
        if path == ROOT / "blvnb" / "experiments" / "profiles.py":
            continue
        found += profile_name_uses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, src in _code_cells(nb):
            found += profile_name_uses(src, f"{nb.relative_to(ROOT)} cell {i}")
    assert not found, "profile names tested outside profiles.py (make it a Profile field):\n" + "\n".join(found)


def test_the_added_fields_are_not_run_settings_so_not_in_any_key(monkeypatch):
    assert set(ADDED) <= {f.name for f in fields(Profile)}
    assert not set(ADDED) & {f.name for f in fields(runs.RunConfig)}
    cfg = runs.RunConfig.from_profile("quick", loss="blv", loss_options={"sigma": 6.0})
    changed = PROFILES["quick"].with_overrides(machine="gpu", where="elsewhere", paper_recipes=True,
                                               chapter=ChapterSizes(toy_steps=1))
    monkeypatch.setitem(PROFILES, "quick", changed)
    assert runs.RunConfig.from_profile("quick", loss="blv", loss_options={"sigma": 6.0}).key() == cfg.key()


def test_the_four_profiles_state_each_field():
    smoke, quick, gpu, paper = (PROFILES[n] for n in ("smoke", "quick", "gpu", "paper"))
    assert smoke.subset and quick.subset and not gpu.subset and not paper.subset
    assert {smoke.machine, quick.machine} == {"cpu"} and {gpu.machine, paper.machine} == {"gpu"}
    assert {smoke.model_variant, quick.model_variant} == {"small"} and {gpu.model_variant, paper.model_variant} == {"paper"}
    assert paper.paper_recipes and not (smoke.paper_recipes or quick.paper_recipes or gpu.paper_recipes)
    assert all(p.where for p in PROFILES.values())
    assert smoke.chapter.toy_steps < quick.chapter.toy_steps and quick.chapter == ChapterSizes()


def test_tables_estimates_and_commands_follow_the_fields(monkeypatch):
    """The fields drive what the names used to: a gpu profile marked ``subset`` runs the toy subset, a quick
    profile on a GPU machine is estimated at GPU rates and its chapters get ``-p device cuda``."""
    from blvnb import reproduce

    cfg = runs.RunConfig.from_profile("quick")
    cpu_est = execute.est_seconds(cfg)
    monkeypatch.setitem(PROFILES, "gpu", PROFILES["gpu"].with_overrides(subset=True))
    assert {e.row for e in tables.entries("blv-t1", "gpu", seeds=[0])} == {tables.T1_QUICK_LABEL}
    monkeypatch.setitem(PROFILES, "quick", PROFILES["quick"].with_overrides(machine="gpu", model_variant="paper",
                                                                            subset=False))
    assert execute.est_seconds(cfg) != cpu_est and execute.est_seconds(cfg) >= execute.FIXED_SECONDS["gpu"]
    assert "-p device cuda" in reproduce.papermill_command("blv_method", "quick")
    assert {e.cfg.model for e in tables.entries("blv-t1", "quick", seeds=[0])} == \
        {f"{name}@paper" for name in tables.T1_ROWS}
    assert reproduce.profile_args(PROFILES["paper"])[-2:] == ["data_root", "/path/to/data"]
    assert reproduce.profile_args(PROFILES["smoke"]) == []


@pytest.mark.parametrize("overrides, needle", [
    ({"machine": "tpu"}, "'tpu'"),
    ({"subset": "yes"}, "subset"),
    ({"paper_recipes": 1}, "paper_recipes"),
    ({"model_variant": ""}, "model_variant"),
    ({"chapter": {"toy_steps": 5}}, "chapter"),
    ({"colour": "red"}, "colour"),
])
def test_a_wrong_field_is_a_clear_error(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        get_profile("quick", **overrides)


@pytest.mark.parametrize("sizes, needle", [
    ({"toy_steps": 0}, "toy_steps"),
    ({"synthetic_maps": 2.5}, "synthetic_maps"),
    ({"teacher_images": True}, "teacher_images"),
    ({"layout_images": (24,)}, "layout_images"),
    ({"toy_sigmas": (2.0, 6.0)}, "toy_sigmas"),
    ({"toy_sigmas": (0.0, 2.0)}, "toy_sigmas"),
])
def test_a_wrong_chapter_size_is_a_clear_error(sizes, needle):
    with pytest.raises(ConfigError, match=needle):
        ChapterSizes(**sizes)


def test_an_unknown_profile_name_stays_a_clear_error():
    from blvnb import reproduce

    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        get_profile("huge")
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        tables.entries("blv-t1", "huge")
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        reproduce.papermill_command("blv_method", "huge")
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        rehearse.check_request("huge", None, None)
    with pytest.raises(ConfigError, match="'quick'.*CPU"):
        rehearse.check_request("quick", None, None)
    assert profiles.MACHINES == ("cpu", "gpu")
