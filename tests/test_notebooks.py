"""End to end: every notebook runs under papermill in the smoke profile, and the book builds from them.

These are the integration tests of the book (as in d2l): the same command a reader runs
(`blvnb reproduce`), on a copy of the repository in a temporary folder, with toycity generated into a
temporary cache.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("book")
    # bench/results: the committed benchmark JSON the pages show (blvnb.pages)
    for name in ("_config.yml", "_toc.yml", "book", "notebooks", "blvnb", "bench/results"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name,
                                                           **({"ignore": shutil.ignore_patterns("generated", "__pycache__")} if src.is_dir() else {}))
    env = dict(os.environ, BLVNB_CACHE=str(work / "cache"), BLVNB_RESULTS=str(work / "results"))
    proc = subprocess.run([sys.executable, "-m", "blvnb", "reproduce", "--profile", "smoke"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=3600)
    return work, proc


@pytest.mark.slow
def test_every_notebook_runs_in_smoke_profile(built):
    work, proc = built
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for nb in NOTEBOOKS:
        assert (work / "book" / "generated" / nb.name).is_file(), nb.name


@pytest.mark.slow
def test_book_builds_with_figures_and_tables(built):
    work, proc = built
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    index = work / "_build" / "html" / "index.html"
    assert index.is_file()
    page = (work / "_build" / "html" / "book" / "generated" / "long_tail_data.html").read_text()
    assert "<img" in page and "<table" in page and "Verdict" in page
    assert "Profile <code" in page and "smoke" in page  # the page says which profile its numbers come from
    import json

    for nb in NOTEBOOKS:  # no error output in any executed notebook
        cells = json.loads((work / "book" / "generated" / nb.name).read_text())["cells"]
        outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], nb.name
        assert not any("not shown —" in "".join(o.get("data", {}).get("text/markdown", "")) for o in outputs), nb.name
    # the second run finds every notebook fresh
    env = dict(os.environ, BLVNB_CACHE=str(work / "cache"), BLVNB_RESULTS=str(work / "results"))
    again = subprocess.run([sys.executable, "-m", "blvnb", "reproduce", "--profile", "smoke", "--no-build"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("fresh, skipped") == len(NOTEBOOKS), again.stdout


def test_notebooks_are_committed_without_outputs():
    import json

    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in code), nb.name
        assert "parameters" in code[0].get("metadata", {}).get("tags", []), f"{nb.name}: first code cell must be tagged parameters"


def test_every_notebook_reads_its_seeds_parameter_through_parse_seeds():
    """`papermill ... -p seeds 0` passes an int: every chapter turns its seeds parameter into seeds with
    tables.parse_seeds (one int is that seed, a bad value a clear error), never with tuple()."""
    import json

    for nb in NOTEBOOKS:
        code = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        if "seeds" not in code or "seeds = None             # not used here" in code:
            continue  # no seeds parameter, or one the chapter documents as unused (blv_method's toy)
        assert "tuple(seeds)" not in code and "tuple(released_seeds)" not in code, nb.name
        assert "parse_seeds(seeds" in code, nb.name
