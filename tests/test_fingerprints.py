"""Data fingerprints in run records, tables flagged whose runs read different data, and the data check a
batch of runs on a real data root makes before its first run (issue 22)."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
from pathlib import Path

import pytest

import blvnb
from blvnb.cli import main
from blvnb.data import build_dataset, toycity
from blvnb.data.check import BATCH_CHECK_ENV, check_tree
from blvnb.data.fingerprint import describe, fingerprint, split_fingerprint
from blvnb.errors import DatasetError
from blvnb.experiments import execute, records, store, tables

SIZE = (32, 64)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    monkeypatch.delenv(BATCH_CHECK_ENV, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    """A data root holding Cityscapes in its real layout (toycity): 3 train, 2 val images."""
    root = tmp_path_factory.mktemp("data")
    toycity.write_tree(root / "cityscapes", "cityscapes", 3, 2, size=SIZE, progress=False)
    for img in sorted((root / "cityscapes" / "leftImg8bit" / "train").glob("*/*.png")):  # the coarse train_extra
        extra = root / "cityscapes" / "leftImg8bit" / "train_extra" / img.parent.name
        extra.mkdir(parents=True, exist_ok=True)
        shutil.copy(img, extra / img.name.replace("_000019_", "_000020_"))
    return root


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --- the fingerprint ------------------------------------------------------------------------------------------

def test_a_fingerprint_counts_names_and_sizes_and_reads_no_file(cityscapes, tmp_path, monkeypatch):
    ds = build_dataset("cityscapes", cityscapes / "cityscapes", split="train")
    files = [ds.image_path(i) for i in range(3)] + [ds.label_path(i) for i in range(3)]

    def no_reads(*a, **k):
        raise AssertionError("a fingerprint opened a file")

    monkeypatch.setattr(builtins, "open", no_reads)
    monkeypatch.setattr(io, "open", no_reads)
    fp = split_fingerprint(ds)
    monkeypatch.undo()
    assert fp["files"] == 6 and fp["missing"] == 0 and fp["bytes"] == sum(p.stat().st_size for p in files)
    assert len(fp["sha256"]) == 64 and "6 files" in describe(fp) and fp["sha256"][:12] in describe(fp)
    # read without labels, the split is the same data: the same fingerprint
    assert split_fingerprint(build_dataset("cityscapes", cityscapes / "cityscapes", split="train", labeled=False)) == fp
    # mounted elsewhere: the same; one file re-encoded (another size), or a label missing: another
    moved = copy(cityscapes / "cityscapes", tmp_path / "elsewhere" / "cs")
    assert split_fingerprint(build_dataset("cityscapes", moved, split="train")) == fp
    moved_ds = build_dataset("cityscapes", moved, split="train")
    with open(moved_ds.label_path(0), "ab") as fh:
        fh.write(b"\0")
    grown = split_fingerprint(moved_ds)
    assert grown["sha256"] != fp["sha256"] and grown["bytes"] == fp["bytes"] + 1
    moved_ds.label_path(1).unlink()
    partial = split_fingerprint(build_dataset("cityscapes", moved, split="train", labeled=False))
    assert partial["missing"] == 1 and partial["files"] == 6 and partial["sha256"] not in (fp["sha256"], grown["sha256"])
    assert "1 missing" in describe(partial)


def test_fingerprint_bad_inputs(tmp_path):
    empty = fingerprint(tmp_path, [])
    assert empty == {"files": 0, "bytes": 0, "missing": 0,
                     "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
    assert fingerprint(tmp_path, [tmp_path / "not-there.png"])["missing"] == 1
    with pytest.raises(DatasetError, match="/elsewhere/x.png.*not under the data set's folder"):
        fingerprint(tmp_path, ["/elsewhere/x.png"])


def test_a_run_records_the_fingerprint_of_each_split_it_read_and_the_batch_check(isolated, monkeypatch):
    from blvnb.experiments.runs import RunConfig, run

    cfg = RunConfig.from_profile("smoke", device="cpu", progress=False, iters=2)
    monkeypatch.setenv(BATCH_CHECK_ENV, "skipped")
    rec = run(cfg)
    fps = rec["data_fingerprint"]
    assert sorted(fps) == ["cityscapes/train", "cityscapes/val"], fps
    assert fps["cityscapes/val"]["files"] == 2 * rec["n_val_images"] and rec["data_check"] == "skipped"
    assert "data_fingerprint" not in cfg.key_dict() and "data_check" not in cfg.key_dict()
    stored = json.loads(store.record_path("smoke", cfg.key()).read_text())
    assert stored["data_fingerprint"] == fps and stored["data_check"] == "skipped"
    records.validate(stored)  # a record with fingerprints imports
    monkeypatch.delenv(BATCH_CHECK_ENV)
    assert run(cfg, force=True)["data_check"] is None  # not started by a checked batch


def test_a_run_on_a_real_root_fingerprints_its_splits_wherever_the_root_is(isolated, cityscapes):
    from blvnb.experiments.runs import RunConfig, RunData

    cfg = RunConfig.from_profile("smoke", device="cpu", progress=False, data_root=str(cityscapes))
    moved = RunConfig.from_profile("smoke", device="cpu", progress=False,
                                   data_root=str(copy(cityscapes, isolated / "mnt" / "data")))
    assert cfg.key() == moved.key()
    seen = []
    for c in (cfg, moved):
        data = RunData(c, c.key(), None)
        data.split_indices("1/2")
        data.dataset("cityscapes", "val", train=False)
        data.extra_images(1)
        seen.append(data.fingerprints)
    assert seen[0] == seen[1]
    assert sorted(seen[0]) == ["cityscapes-coarse/unlabeled", "cityscapes/train", "cityscapes/val"]
    assert seen[0]["cityscapes/train"]["files"] == 6  # the whole split, whatever part of it a run labels
    assert seen[0]["cityscapes-coarse/unlabeled"]["files"] == 3  # the pool the extra images are taken from


# --- tables whose runs read different data -----------------------------------------------------------------

def paper_records(fingerprints: list[dict], table: str = "blv-t1") -> list[dict]:
    """Records of the first runs of a paper table, each with one of ``fingerprints`` for Cityscapes train."""
    val = {"files": 1000, "bytes": 10 ** 9, "missing": 0, "sha256": "b" * 64}
    out = []
    for entry, fp in zip(tables.entries(table, "paper", seeds=(0,), data_root="/data"), fingerprints):
        cfg = entry.cfg
        out.append({"key": cfg.key(), "key_scheme": store.KEY_SCHEME, "profile": "paper",
                    "config": json.loads(json.dumps(cfg.key_dict(), default=str)), "version": blvnb.__version__,
                    "git": "abc1234", "device": "cuda:0 (NVIDIA H100)", "train_seconds": 1.0,
                    "metrics": {"mIoU": 50.0, "mIoU_head_blv": 60.0, "mIoU_tail_blv": 30.0, "iou": [50.0] * 19},
                    "data_fingerprint": {"cityscapes/train": fp, "cityscapes/val": val}, "data_check": "passed"})
    return out


FULL = {"files": 5950, "bytes": 11_300_000_000, "missing": 0, "sha256": "f" * 64}
PARTIAL = {"files": 3000, "bytes": 5_600_000_000, "missing": 0, "sha256": "0" * 64}


def write_store(src: Path, recs: list[dict]) -> Path:
    for rec in recs:
        path = src / rec["profile"] / "runs" / f"{rec['key']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
    return src


def test_conflicts_are_per_table_and_split():
    recs = {"k1": {"data_fingerprint": {"cs/train": FULL}}, "k2": {"data_fingerprint": {"cs/train": PARTIAL}},
            "k3": {"data_fingerprint": {"cs/train": FULL}}, "k4": {}}  # k4: a record from before fingerprints
    got = execute.fingerprint_conflicts(recs, {"k1": ["t1"], "k2": ["t1"], "k3": ["t1", "t2"], "k4": ["t2"]})
    assert [(c["table"], c["split"]) for c in got] == [("t1", "cs/train")]
    assert [v["runs"] for v in got[0]["versions"]] == [["k1", "k3"], ["k2"]]  # the common version first
    line = execute.describe_conflict(got[0], "paper")
    assert "table t1 (profile paper): its runs read cs/train in 2 different versions" in line
    assert "5950 files, 11.3 GB" in line and "3000 files, 5.6 GB" in line and "runs k1, k3" in line
    assert execute.fingerprint_conflicts({}, {}) == []
    odd = {"k5": {"data_fingerprint": {"cs/train": "?"}}, "k6": {"data_fingerprint": ["cs/train"]}}
    assert execute.fingerprint_conflicts({**recs, **odd}, {"k1": ["t1"], "k5": ["t1"], "k6": ["t1"]}) == []


def test_runs_import_flags_a_table_trained_on_two_versions_of_a_split(isolated, capsys):
    same = write_store(isolated / "same", paper_records([FULL, FULL]))
    assert main(["runs", "import", str(same)]) == 0
    assert "warning" not in capsys.readouterr().err
    a = paper_records([FULL, FULL, PARTIAL])[2]  # a third run, from a server with a partial copy
    assert main(["runs", "import", str(write_store(isolated / "other", [a]))]) == 0
    err = capsys.readouterr().err
    assert "blvnb: warning: table blv-t1 (profile paper): its runs read cityscapes/train in 2 different versions" in err
    assert "3000 files" in err and a["key"][:8] in err and "cityscapes/val" not in err
    assert len(records.list_committed("paper")) == 3  # flagged, not refused
    config = {"strategy": "supervised", "seed": 0}  # a profile this blvnb has no tables for: nothing to compare
    lab = {**a, "profile": "lab", "config": config, "key": store.config_key(config, blvnb.__version__)}
    assert main(["runs", "import", str(write_store(isolated / "lab", [lab]))]) == 0
    assert "warning" not in capsys.readouterr().err and records.list_committed("lab") == [lab["key"]]


@pytest.mark.parametrize("field, value, msg", [
    ("data_fingerprint", ["cityscapes/train"], "field 'data_fingerprint' must map each split"),
    ("data_fingerprint", {"cityscapes/train": {"files": -1, "bytes": 0, "sha256": "x"}}, "field 'data_fingerprint' must map"),
    ("data_fingerprint", {"cityscapes/train": {"files": 1, "bytes": 2}}, "field 'data_fingerprint' must map"),
    ("data_check", "maybe", "field 'data_check' must be 'passed', 'skipped' or null"),
])
def test_import_refuses_a_malformed_fingerprint(isolated, field, value, msg):
    rec = {**paper_records([FULL])[0], field: value}
    src = write_store(isolated / "bad", [rec])
    with pytest.raises(records.RecordError, match=f"{rec['key']}.json: {msg}"):
        records.import_records(src)
    assert records.list_committed("paper") == []


def test_the_status_page_flags_a_table_trained_on_two_versions_of_a_split(isolated):
    from blvnb import reproduce

    book = isolated / "book-root"
    book.mkdir()
    full, partial = paper_records([FULL, PARTIAL])
    records.import_records(write_store(isolated / "s", [full, partial]))
    page = reproduce.write_status(book, profile="paper").read_text()
    status = json.loads((book / "book" / "generated" / "reproduction.json").read_text())
    flagged = [r for r in status if "data_conflicts" in r]
    runs = execute.plan_for("paper").runs  # the tables that show both runs (blv-t1, and those sharing its runs)
    both = (set(runs[full["key"]].tables) | set(runs[full["key"]].needed_by)) & \
        (set(runs[partial["key"]].tables) | set(runs[partial["key"]].needed_by))
    assert "blv-t1" in both
    assert flagged and {r["claim"] for r in flagged} == {c.id for c in reproduce._claims().CLAIMS if c.source in both}
    conflict = next(r for r in flagged if r["claim"].startswith("blv-t1/"))["data_conflicts"]["paper"][0]
    assert conflict["table"] == "blv-t1" and conflict["split"] == "cityscapes/train"
    assert [v["runs"] for v in conflict["versions"]] == [[full["key"]], [partial["key"]]] or \
        [v["runs"] for v in conflict["versions"]] == [[partial["key"]], [full["key"]]]
    assert "## Runs of one table on different data" in page and "3000 files" in page
    assert page.count("⚠ data differ") == len(flagged)
    # the same data everywhere: no flag
    shutil.rmtree(isolated / "records")
    records.import_records(write_store(isolated / "t", paper_records([FULL, FULL])))
    page = reproduce.write_status(book, profile="paper").read_text()
    assert "different data" not in page and "⚠" not in page
    assert not any("data_conflicts" in r for r in json.loads((book / "book" / "generated" / "reproduction.json").read_text()))


# --- the data check of a batch -------------------------------------------------------------------------------

@pytest.fixture
def no_runs(monkeypatch):
    """``execute.execute`` replaced by a stand-in that notes what the batch told its runs."""
    seen = []

    def fake(plan, run_fn=None, executor="local", **kw):
        seen.append(os.environ.get(BATCH_CHECK_ENV))
        return {}

    monkeypatch.setattr(execute, "execute", fake)
    return seen


def batch(root, *extra):
    return main(["runs", "execute", "--profile", "smoke", "--only", "blv-t1", "--data-root", str(root), *extra])


def test_runs_execute_checks_the_data_root_once_before_the_first_run(isolated, cityscapes, no_runs, monkeypatch):
    from blvnb.data import check

    checked = []
    real = check.check_tree
    monkeypatch.setattr(check, "check_tree", lambda *a, **k: checked.append(k.get("decode")) or real(*a, **k))
    assert batch(cityscapes) == 0
    assert no_runs == ["passed"] and checked == [False]  # once: every file opened, none decoded
    assert os.environ.get(BATCH_CHECK_ENV) is None  # stated to the batch's runs only
    assert batch(cityscapes, "--skip-data-check") == 0
    assert no_runs == ["passed", "skipped"] and checked == [False]


def unreadable(path: Path) -> None:
    """A file the check cannot open, also for root (who reads a chmod 000 file): a folder in its place."""
    path.unlink()
    path.mkdir()


def broken_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "gone.png")


def empty_file(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("fault, needle", [(unreadable, "cannot open it"), (broken_link, "a broken link to"),
                                           (empty_file, "empty file")])
def test_runs_execute_refuses_a_root_with_an_unreadable_file_naming_it(isolated, cityscapes, no_runs, capsys,
                                                                       fault, needle):
    root = copy(cityscapes, isolated / "data")
    labels = sorted((root / "cityscapes" / "gtFine" / "train").rglob("*_labelIds.png"))
    fault(labels[1])
    image = sorted((root / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))[0]
    (empty_file if fault is unreadable else fault)(image)  # a folder named .png is no image: none is listed
    assert batch(root) == 2
    err = capsys.readouterr().err
    assert f"the data root {root} cannot run the tables of profile smoke" in err
    assert str(labels[1]) in err and str(image) in err and needle in err
    assert no_runs == []  # nothing ran
    assert batch(root, "--skip-data-check") == 0 and no_runs == ["skipped"]  # the user's call, recorded


def test_runs_execute_refuses_a_missing_root_or_an_empty_split(isolated, cityscapes, no_runs, capsys):
    assert batch(isolated / "nowhere") == 2
    assert f"--data-root {isolated / 'nowhere'} does not exist" in capsys.readouterr().err
    root = copy(cityscapes, isolated / "data")
    for p in (root / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"):
        p.unlink()
    assert batch(root) == 2
    err = capsys.readouterr().err
    assert "cityscapes" in err and "val" in err and no_runs == []
    assert main(["runs", "execute", "--profile", "smoke", "--only", "blv-t1", "--skip-data-check"]) == 2
    assert "--skip-data-check applies to a batch on real data: pass it with --data-root" in capsys.readouterr().err


def test_check_tree_without_decoding_names_unreadable_files_and_decodes_nothing(cityscapes, tmp_path, monkeypatch):
    root = copy(cityscapes / "cityscapes", tmp_path / "cs")
    assert check_tree(root, "cityscapes", progress=False, decode=False).ok
    label = sorted((root / "gtFine" / "train").rglob("*_labelIds.png"))[0]
    unreadable(label)
    image = sorted((root / "leftImg8bit" / "val").rglob("*.png"))[0]
    image.write_bytes(b"GIF89a not a png")
    from PIL import Image

    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded a file"))
    report = check_tree(root, "cityscapes", progress=False, decode=False)
    assert sorted((p.kind, Path(p.path).name) for p in report.problems) == \
        [("unreadable", label.name), ("wrong-format", image.name)], report.summary()
