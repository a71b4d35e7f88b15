"""The console script: `blvnb data toycity` writes a real layout; user errors exit 2 with a message."""

import subprocess
import sys

from blvnb.cli import main


def test_python_m_blvnb_data_toycity(tmp_path):
    out = tmp_path / "cs"
    proc = subprocess.run([sys.executable, "-m", "blvnb", "data", "toycity", "--out", str(out), "--style", "cityscapes",
                           "--n-train", "3", "--n-val", "2", "--size", "32x64", "--seed", "1", "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))) == 3
    assert len(list((out / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))) == 2


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["data", "toycity", "--out", str(tmp_path / "x"), "--size", "big"]) == 2
    assert "expected HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["data", "prepare", "--profile", "fast"]) == 2
    assert "unknown profile" in capsys.readouterr().err


# --- blvnb runs (plan, execute, import) -----------------------------------------------------------------

import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def runs_env(monkeypatch, tmp_path):
    from blvnb.experiments import runs


    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    return tmp_path


def test_runs_plan_json_lists_each_distinct_run_with_its_tables(runs_env, capsys):
    assert main(["runs", "plan", "--profile", "quick", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len({r["key"] for r in rows}) == len(rows) > 10
    for r in rows:
        assert {"key", "strategy", "model", "loss", "seed", "tables", "est_seconds"} <= set(r)
        assert r["strategy"] in ("supervised", "dars-rounds", "mean-teacher", "uda") and r["tables"]
    assert max(len(r["tables"]) for r in rows) >= 5  # a shared baseline is one run
    assert main(["runs", "plan", "--profile", "quick", "--only", "blv-t1"]) == 0
    out = capsys.readouterr().out
    assert "blv-t1" in out and "distinct runs" in out and "minutes" in out


@pytest.mark.parametrize("argv, msg", [
    (["runs", "plan", "--profile", "fast"], "unknown profile 'fast'"),
    (["runs", "plan", "--only", "blv-t99"], "--only 'blv-t99' names no table"),
    (["runs", "execute", "--executor", "mpi"], "unknown executor 'mpi'; choose one of local, gpus, cpus, slurm"),
    (["runs", "execute", "--jobs", "2"], "--jobs applies to --executor cpus (got --executor local)"),
    (["runs", "execute", "--executor", "cpus", "--jobs", "0"], "--jobs must be a whole number >= 1 for --executor cpus, got 0"),
    (["reproduce", "--jobs", "0"], "--jobs must be a whole number >= 1 or 'auto', got '0'"),
    (["reproduce", "--jobs", "many"], "--jobs must be a whole number >= 1 or 'auto', got 'many'"),
    (["runs", "execute", "--partition", "gpu"], "--partition only apply to --executor slurm"),
    (["runs", "execute", "--executor", "slurm", "--time-limit", "0"], "--time-limit must be a positive number"),
    (["runs", "import", "/nonexistent/results"], "no such file or folder"),
])
def test_runs_user_errors_exit_2(runs_env, capsys, argv, msg):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_runs_execute_dry_run_and_import(runs_env, capsys):
    assert main(["runs", "execute", "--profile", "smoke", "--only", "dars-t6", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run records in the store" in out
    dry = runs_env / "results" / "_dry_run" / "smoke" / "runs"
    assert len(list(dry.glob("*.json"))) >= 3
    assert not (runs_env / "results" / "smoke").exists()  # placeholders never reach the real store
    assert main(["runs", "import", str(runs_env / "results" / "_dry_run")]) == 2
    assert "placeholder" in capsys.readouterr().err
    rec = json.loads(next(dry.glob("*.json")).read_text())
    rec.pop("dry_run")
    src = runs_env / "server" / "smoke" / "runs"
    src.mkdir(parents=True)
    (src / f"{rec['key']}.json").write_text(json.dumps(rec))
    assert main(["runs", "import", str(runs_env / "server")]) == 0
    assert (runs_env / "records" / "smoke" / "runs" / f"{rec['key']}.json").is_file()


def test_runs_tables_prints_every_table_with_its_title_and_note(capsys):
    from blvnb.experiments import tables

    assert main(["runs", "tables"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = tables.list_tables()
    assert len(ids) == len(set(ids)) > 30 and {"blv-t1", "dars-t15"} <= set(ids)
    assert len(lines) == 2 * len(ids), lines[:4]
    for t, row, note in zip(ids, lines[::2], lines[1::2], strict=True):
        spec = tables.get_table(t)
        name, title = row.split(None, 1)  # "<id>  <title>", the id padded to one column
        assert (name, title) == (t, spec.title) and row.index(title) == 12, row
        assert note == " " * 12 + spec.note, note[:80]


def test_a_run_stopped_on_a_signal_exits_with_128_plus_the_signal(monkeypatch, capsys):
    import argparse
    import signal

    from blvnb import cli
    from blvnb.engine.signals import Interrupted
    from blvnb.errors import BlvnbError

    def stopped(a):
        raise Interrupted(signal.SIGTERM, "run abc stopped by SIGTERM at iteration 3; checkpoint written")

    def failed(a):
        raise BlvnbError("an ordinary error")

    for fn, code in ((stopped, 128 + signal.SIGTERM), (failed, 2)):
        monkeypatch.setattr(cli, "build_parser", lambda fn=fn: _Parser(argparse.Namespace(fn=fn, verbose=False)))
        assert cli.main([]) == code
    assert "stopped by SIGTERM" in capsys.readouterr().err


class _Parser:
    def __init__(self, ns):
        self.ns = ns

    def parse_args(self, argv):
        return self.ns
