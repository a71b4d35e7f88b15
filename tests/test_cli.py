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
