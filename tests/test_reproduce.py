"""`blvnb reproduce` around the notebooks, cheaply: chapters are tiny notebooks run by a stand-in papermill
(``python -m papermill`` finds ``FAKE_PAPERMILL`` first on PYTHONPATH), so the real :func:`reproduce.execute`
(subprocess, log, run box, stamp) runs without a kernel. Freshness and what invalidates it, a notebook that
fails, ``--only`` with an unknown name, ``--jobs auto`` (``make book``'s default); ``data prepare`` on a real data
root (toycity written in the real data sets' layouts)."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from blvnb import reproduce
from blvnb.cli import main
from blvnb.errors import BlvnbError, ConfigError

#: papermill's command line as reproduce.execute calls it: INPUT OUTPUT [--cwd D] [-p NAME VALUE]... A notebook
#: whose metadata says ``"fail": true`` writes a partial output and exits 1, as papermill does on a raising cell.
FAKE_PAPERMILL = textwrap.dedent('''
    import json, os, sys
    src, out, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    params = {rest[i + 1]: rest[i + 2] for i, a in enumerate(rest) if a == "-p"}
    nb = json.load(open(src))
    inject = {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
              "execution_count": None, "source": [f"{k} = {v!r}\\n" for k, v in params.items()]}
    nb["cells"].insert(1, inject)
    with open(os.environ["FAKE_PAPERMILL_LOG"], "a") as f:
        f.write(json.dumps({"nb": os.path.basename(src), "params": params, "pid": os.getpid(),
                            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "threads": os.environ.get("OMP_NUM_THREADS")}) + "\\n")
    if nb["metadata"].get("fail"):
        nb["metadata"]["partial"] = True
        json.dump(nb, open(out, "w"))
        print("Traceback (most recent call last):\\nRuntimeError: the chapter broke")
        sys.exit(1)
    json.dump(nb, open(out, "w"))
''')


def notebook(title: str, fail: bool = False, note: str = "") -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n"]},
             {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [], "execution_count": None,
              "source": ["profile = \"quick\"  # the profile\n", "data_root = None  # real data\n"]},
             {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": [note]}]
    return json.dumps({"cells": cells, "metadata": {"fail": fail}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A checkout with three chapters, a library of two files, and the stand-in papermill."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: test\n")
    for name in ("a", "b", "c"):
        (root / "notebooks" / f"{name}.ipynb").write_text(notebook(name))
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "core.py").write_text("X = 1\n")
    (lib / "claims.yaml").write_text("claims: []\n")
    monkeypatch.setattr(reproduce, "LIBRARY", lib)
    pm = tmp_path / "fakepm" / "papermill"
    pm.mkdir(parents=True)
    (pm / "__init__.py").write_text("")
    (pm / "__main__.py").write_text(FAKE_PAPERMILL)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pm.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_PAPERMILL_LOG", str(tmp_path / "papermill.log"))
    monkeypatch.setattr(reproduce, "gpu_count", lambda: 0)
    return root


def calls(root: Path) -> list[dict]:
    log = root.parent / "papermill.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def run(root, echo=None, **kw):
    lines = []
    out = reproduce.run_notebooks(root=root, out_dir=root / "out", echo=echo or lines.append, **kw)
    return out, lines


def executed(root: Path) -> list[str]:
    return sorted(c["nb"].removesuffix(".ipynb") for c in calls(root))


# --- freshness ---------------------------------------------------------------------------------------------

def test_a_second_run_skips_every_fresh_chapter(book):
    outputs, _ = run(book, profile="smoke")
    assert [p.name for p in outputs] == ["a.ipynb", "b.ipynb", "c.ipynb"] and executed(book) == ["a", "b", "c"]
    nb = json.loads((book / "out" / "a.ipynb").read_text())
    assert any("run-this-chapter" in c["metadata"].get("tags", []) for c in nb["cells"])  # the real execute ran
    _, lines = run(book, profile="smoke")
    assert sum("fresh, skipped" in ln for ln in lines) == 3 and len(calls(book)) == 3


@pytest.mark.parametrize("change, stale", [
    ("notebook b", ["b"]),
    ("library .py", ["a", "b", "c"]),
    ("library .yaml", ["a", "b", "c"]),
    ("a new library file", ["a", "b", "c"]),
    ("profile", ["a", "b", "c"]),
    ("data_root", ["a", "b", "c"]),
    ("library cache file", []),
    ("output removed", ["c"]),
    ("stamp of another digest", ["a"]),
])
def test_what_makes_a_chapter_stale(book, change, stale):
    run(book, profile="smoke")
    lib, kw = reproduce.LIBRARY, {"profile": "smoke"}
    if change == "notebook b":
        (book / "notebooks" / "b.ipynb").write_text(notebook("b", note="print(2)\n"))
    elif change == "library .py":
        (lib / "core.py").write_text("X = 2\n")
    elif change == "library .yaml":
        (lib / "claims.yaml").write_text("claims: [x]\n")
    elif change == "a new library file":
        (lib / "more.py").write_text("")
    elif change == "profile":
        kw["profile"] = "quick"
    elif change == "data_root":
        kw["data_root"] = "/data"
    elif change == "library cache file":
        (lib / "__pycache__").mkdir()
        (lib / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\0")
        (lib / "notes.txt").write_text("not code")
    elif change == "output removed":
        (book / "out" / "c.ipynb").unlink()
    elif change == "stamp of another digest":
        stamp = book / "out" / "a.stamp.json"
        stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "digest": "0" * 64}))
    n = len(calls(book))
    _, lines = run(book, **kw)
    assert sorted(c["nb"].removesuffix(".ipynb") for c in calls(book)[n:]) == stale
    assert sum("fresh, skipped" in ln for ln in lines) == 3 - len(stale)
    _, lines = run(book, **kw)  # and then fresh again
    assert sum("fresh, skipped" in ln for ln in lines) == 3


def test_force_runs_fresh_chapters_again(book):
    run(book, profile="smoke")
    run(book, profile="smoke", force=True)
    assert executed(book) == ["a", "a", "b", "b", "c", "c"]


# --- a chapter that fails -----------------------------------------------------------------------------------

def test_a_failing_chapter_lets_the_others_run_then_stops_before_the_book(book):
    (book / "notebooks" / "b.ipynb").write_text(notebook("b", fail=True))
    lines = []
    with pytest.raises(BlvnbError) as info:
        run(book, profile="smoke", echo=lines.append)
    msg = str(info.value)
    assert "b.ipynb" in msg and "a.ipynb" not in msg and "other chapters ran" in msg and "not built" in msg
    assert str(book / "out" / "logs" / "b.log") in msg  # where to read why
    assert executed(book) == ["a", "b", "c"]  # the chapters after it ran
    assert (book / "out" / "a.stamp.json").is_file() and (book / "out" / "c.stamp.json").is_file()
    assert not (book / "out" / "b.stamp.json").exists()  # never fresh ...
    assert json.loads((book / "out" / "b.ipynb").read_text())["metadata"]["partial"]  # ... its partial output kept
    assert "the chapter broke" in (book / "out" / "logs" / "b.log").read_text()
    assert any(ln.startswith("[FAILED] b.ipynb") for ln in lines)
    # fixed, it runs again, alone: the others are fresh
    (book / "notebooks" / "b.ipynb").write_text(notebook("b"))
    run(book, profile="smoke")
    assert executed(book) == ["a", "b", "b", "c"]


def test_in_parallel_a_failing_chapter_shows_how_its_log_ends(book):
    (book / "notebooks" / "a.ipynb").write_text(notebook("a", fail=True))
    lines = []
    with pytest.raises(BlvnbError, match=r"a\.ipynb \(log: .*a\.log\)"):
        run(book, profile="smoke", jobs=2, echo=lines.append)
    assert executed(book) == ["a", "b", "c"]
    assert any("RuntimeError: the chapter broke" in ln for ln in lines)  # not streamed: the log's tail echoed


def test_a_chapter_that_fails_again_loses_its_old_stamp(book):
    run(book, profile="smoke")
    (book / "notebooks" / "a.ipynb").write_text(notebook("a", fail=True))
    with pytest.raises(BlvnbError, match="a.ipynb"):
        run(book, profile="smoke")
    assert not (book / "out" / "a.stamp.json").exists()
    (book / "notebooks" / "a.ipynb").write_text(notebook("a"))  # the old source back: its old digest again
    run(book, profile="smoke")
    assert executed(book).count("a") == 3  # not "fresh" from the stamp of the run before the failure


def test_reproduce_exits_2_when_a_chapter_fails_and_builds_nothing(book, monkeypatch, capsys):
    from blvnb import cli

    (book / "notebooks" / "c.ipynb").write_text(notebook("c", fail=True))
    monkeypatch.chdir(book)
    monkeypatch.setattr(cli, "_data_prepare", lambda a: None)  # the smoke data: not needed by these chapters
    monkeypatch.setattr(reproduce, "build_book", lambda *a, **k: pytest.fail("the book was built"))
    monkeypatch.setattr(reproduce, "write_status", lambda *a, **k: pytest.fail("the status page was written"))
    assert main(["reproduce", "--profile", "smoke", "--only", "a", "c", "--jobs", "1"]) == 2
    assert "notebook(s) failed: c.ipynb (log: " in capsys.readouterr().err
    assert executed(book) == ["a", "c"]


# --- --only ----------------------------------------------------------------------------------------------

def test_only_with_an_unknown_name_names_it_and_the_chapters(book):
    with pytest.raises(ConfigError) as info:
        run(book, profile="smoke", only=["a", "nope"])
    msg = str(info.value)
    assert "'nope'" in msg and "a, b, c" in msg and not calls(book)


def test_only_takes_names_paths_and_file_names(book):
    run(book, profile="smoke", only=["a", "notebooks/b.ipynb"])
    assert executed(book) == ["a", "b"]


def test_reproduce_only_unknown_fails_before_any_data_or_run(book, monkeypatch, capsys):
    from blvnb import cli

    monkeypatch.chdir(book)
    monkeypatch.setattr(cli, "_data_prepare", lambda a: pytest.fail("data prepared for an unknown chapter"))
    assert main(["reproduce", "--profile", "smoke", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--only" in err and "'nope'" in err and "a, b, c" in err and not calls(book)


# --- --jobs auto -----------------------------------------------------------------------------------------

def test_jobs_auto_is_one_worker_per_gpu_or_per_core(monkeypatch):
    monkeypatch.setattr(reproduce, "gpu_count", lambda: 0)
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: 6)
    assert reproduce.workers_for("auto") == 6
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: None)
    assert reproduce.workers_for("auto") == 1
    monkeypatch.setattr(reproduce, "gpu_count", lambda: 2)
    assert reproduce.workers_for("auto") == 2


def test_make_book_passes_jobs_auto():
    make = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert re.search(r"^JOBS\s*\?=\s*auto\s*$", make, re.M) and "reproduce --profile $(PROFILE) --jobs $(JOBS)" in make


def test_jobs_auto_runs_chapters_at_once_on_a_cpu_machine(book, monkeypatch):
    pools = []

    class Pool(reproduce.ThreadPoolExecutor):
        def __init__(self, max_workers):
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(reproduce, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: 3)
    lines = []
    run(book, profile="quick", jobs="auto", echo=lines.append)
    got = calls(book)
    assert pools == [3] and executed(book) == ["a", "b", "c"]
    assert {c["gpu"] for c in got} == {None}  # no GPU pinned
    assert {c["threads"] for c in got} == {"1"}  # the quick profile's threads in every chapter, at any --jobs
    assert all(c["params"] == {"profile": "quick", "data_root": "None"} for c in got)


def test_jobs_auto_spreads_chapters_over_the_gpus(book, monkeypatch):
    monkeypatch.setattr(reproduce, "gpu_count", lambda: 2)
    lines = []
    run(book, profile="quick", jobs="auto", echo=lines.append)
    by_nb = {c["nb"]: c["gpu"] for c in calls(book)}
    assert by_nb == {"a.ipynb": "0", "b.ipynb": "1", "c.ipynb": "0"}
    assert any("GPU 1" in ln for ln in lines)


@pytest.mark.parametrize("gpus, cores, executor, kw", [
    (0, 4, "cpus", {"jobs": 4}),
    (2, 16, "gpus", {"gpus": [0, 1]}),
    (0, 1, "local", {}),
])
def test_prepare_runs_with_jobs_auto_picks_the_executor(monkeypatch, tmp_path, gpus, cores, executor, kw):
    from blvnb.experiments import execute as ex

    got = {}
    monkeypatch.setattr(reproduce, "gpu_count", lambda: gpus)
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(ex, "visible_gpus", lambda: list(range(gpus)))
    monkeypatch.setattr(ex, "plan_for", lambda *a: ["run 1", "run 2"])
    monkeypatch.setattr(ex, "execute", lambda plan, executor, force, echo, **k: got.update(executor=executor, **k))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    assert reproduce.prepare_runs("quick", None, "auto", tmp_path, echo=lambda s: None) == 2
    assert got == {"executor": executor, **kw}


# --- data prepare on a real data root ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root in the real data sets' layouts, written by toycity: what a GPU server mounts."""
    import shutil

    from blvnb.data import toycity as T
    from blvnb.data import toycity_layouts as TL

    root = tmp_path_factory.mktemp("data")
    size = (32, 64)
    T.write_tree(root / "cityscapes", "cityscapes", 3, 2, size=size, progress=False)
    for img in sorted((root / "cityscapes" / "leftImg8bit" / "train").glob("*/*.png")):  # the coarse train_extra
        extra = root / "cityscapes" / "leftImg8bit" / "train_extra" / img.parent.name
        extra.mkdir(parents=True, exist_ok=True)
        shutil.copy(img, extra / img.name.replace("_000019_", "_000020_"))
    T.write_tree(root / "gta5", "gta", 3, 0, size=size, progress=False)
    T.write_tree(root / "synthia", "synthia", 3, 0, size=size, progress=False)
    voc = TL.write_tree(root.parent / f"{root.name}-voc", "voc", 2, 2, size=size, n_aug=2, progress=False)
    shutil.move(voc / "VOCdevkit", root / "VOCdevkit")  # the real root holds VOCdevkit/VOC2012 itself
    TL.write_tree(root / "scannet", "scannet", 10, 10, size=size, progress=False)
    return root


def copy_root(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_data_prepare_finds_and_opens_every_data_set_of_a_real_root(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    assert main(["data", "prepare", "--profile", "smoke", "--data-root", str(data_root)]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert list(rows) == ["cityscapes", "gta5", "synthia", "voc", "scannet", "cityscapes-coarse"]
    assert rows["cityscapes"].endswith(f"{data_root / 'cityscapes'}: 3 train, 2 val")
    assert rows["voc"].endswith(f"{data_root / 'VOCdevkit' / 'VOC2012'}: 2 train, 2 val, 4 aug")
    assert rows["cityscapes-coarse"].endswith(": 3 unlabeled")
    assert not (tmp_path / "cache").exists()  # nothing generated


def test_data_prepare_lists_every_problem_of_a_real_root(data_root, tmp_path, capsys):
    import shutil

    root = copy_root(data_root, tmp_path / "data")
    shutil.rmtree(root / "gta5")
    label = sorted((root / "cityscapes" / "gtFine" / "val").glob("*/*_labelIds.png"))[0]
    label.unlink()
    bad = sorted((root / "synthia" / "GT" / "LABELS").glob("*.png"))[0]
    bad.write_bytes(b"not a png")  # the first label, the one decoded
    assert main(["data", "prepare", "--profile", "smoke", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"the data root {root} cannot run the tables of profile smoke" in err
    problems = [ln.strip() for ln in err.splitlines() if ln.startswith("  ")]
    assert [p.split()[0] for p in problems] == ["cityscapes", "gta5", "synthia"], problems  # the coarse images are whole
    assert label.name.removesuffix("_gtFine_labelIds.png") in problems[0]
    assert problems[1].startswith(f"gta5 ({root} (no gta5/, gta/, GTA5/ under it either))"), problems[1]
    assert bad.name in problems[2]
    assert "blvnb data check" in err


def test_data_prepare_of_a_real_profile_needs_a_data_root(tmp_path, capsys):
    assert main(["data", "prepare", "--profile", "paper"]) == 2
    assert "profile paper trains on the real data sets: pass --data-root" in capsys.readouterr().err
    assert main(["data", "prepare", "--profile", "paper", "--data-root", str(tmp_path / "nowhere")]) == 2
    assert f"--data-root {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_reproduce_with_a_broken_data_root_fails_before_any_run(book, data_root, tmp_path, monkeypatch, capsys):
    import shutil

    root = copy_root(data_root, tmp_path / "data")
    shutil.rmtree(root / "synthia")
    monkeypatch.chdir(book)
    monkeypatch.setattr(reproduce, "prepare_runs", lambda *a, **k: pytest.fail("runs started on a broken data root"))
    assert main(["reproduce", "--profile", "smoke", "--data-root", str(root)]) == 2
    assert "synthia" in capsys.readouterr().err and not calls(book)


def test_reproduce_checks_every_file_of_the_root_before_any_run_or_states_that_it_skipped(book, data_root, tmp_path,
                                                                                        monkeypatch, capsys):
    import shutil

    from blvnb.data.check import BATCH_CHECK_ENV

    root = copy_root(data_root, tmp_path / "data")
    label = sorted((root / "cityscapes" / "gtFine" / "train").glob("*/*_labelIds.png"))[-1]
    label.unlink()
    label.mkdir()  # unreadable, also for root (who reads a chmod 000 file); not the label the opening decodes
    monkeypatch.chdir(book)
    monkeypatch.delenv(BATCH_CHECK_ENV, raising=False)
    monkeypatch.setattr(reproduce, "prepare_runs", lambda *a, **k: pytest.fail("runs started on a broken data root"))
    assert main(["reproduce", "--profile", "smoke", "--data-root", str(root), "--no-build"]) == 2
    err = capsys.readouterr().err
    assert f"[unreadable] {label}: cannot open it" in err and not calls(book)
    seen = []
    monkeypatch.setattr(reproduce, "prepare_runs", lambda *a, **k: seen.append(os.environ.get(BATCH_CHECK_ENV)))
    monkeypatch.setattr(reproduce, "run_notebooks", lambda **k: seen.append(os.environ.get(BATCH_CHECK_ENV)))
    assert main(["reproduce", "--profile", "smoke", "--data-root", str(root), "--no-build", "--skip-data-check"]) == 0
    assert seen == ["skipped", "skipped"] and "skipped (--skip-data-check)" in capsys.readouterr().err
    assert BATCH_CHECK_ENV not in os.environ
    label.rmdir()
    shutil.copy(sorted((data_root / "cityscapes" / "gtFine" / "train").glob("*/*_labelIds.png"))[-1], label)
    assert main(["reproduce", "--profile", "smoke", "--data-root", str(root), "--no-build"]) == 0
    assert seen[2:] == ["passed", "passed"]
    monkeypatch.setattr(reproduce, "chapter_sources", lambda *a: pytest.fail("a bad flag must fail before anything"))
    assert main(["reproduce", "--profile", "smoke", "--skip-data-check", "--no-build"]) == 2
    assert "--skip-data-check applies to a batch on real data" in capsys.readouterr().err


# --- --weights DIR: a folder of ImageNet weights, checked before any run, given to every chapter --------------

def test_reproduce_with_weights_checks_the_folder_before_any_run_and_passes_it_on(book, tmp_path, monkeypatch,
                                                                                     capsys):
    from blvnb import cli

    monkeypatch.chdir(book)
    monkeypatch.setattr(cli, "_data_prepare", lambda a: None)
    monkeypatch.setattr(reproduce, "prepare_runs", lambda *a, **k: pytest.fail("runs started"))
    monkeypatch.setattr(reproduce, "write_status", lambda *a, **k: book / "status.md")
    empty = tmp_path / "weights"
    empty.mkdir()
    # the paper plan needs seven backbones' files: none is here, so nothing runs
    assert main(["reproduce", "--profile", "paper", "--data-root", str(tmp_path), "--weights", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "cannot serve this plan" in err and "resnet50_v1c.pth" in err and not calls(book)
    assert main(["reproduce", "--profile", "smoke", "--weights", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err and not calls(book)
    # a folder the plan can use (smoke loads no ImageNet weights): each chapter gets it as a parameter
    assert main(["reproduce", "--profile", "smoke", "--only", "a", "--weights", str(empty), "--no-build"]) == 0
    assert calls(book)[0]["params"]["weights_dir"] == str(empty)
    assert "BLVNB_WEIGHTS" not in os.environ
