"""The engine's teacher (TeacherSource, counts), the one device helper under torchrun, one-way imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from blvnb.engine import evaluate as ev
from blvnb.engine.teacher import TeacherSource
from blvnb.pseudo import distribution as D
from blvnb.pseudo import labelers as L

ROOT = Path(__file__).resolve().parents[1]


def test_teacher_source_labels_a_dataset_into_its_label_layout(tmp_path):
    from blvnb.data import build_dataset
    from blvnb.data.toycity import write_tree

    root = write_tree(tmp_path / "cs", "cityscapes", n_train=3, n_val=1, size=(32, 64), seed=0, progress=False)
    ds = build_dataset("cityscapes", root, "train", labeled=False)
    model = torch.nn.Conv2d(3, 19, 1)
    src = TeacherSource(model, ds, device="cpu")
    probs = src[0]
    assert probs.dtype == torch.float16 and tuple(probs.shape) == (19, 32, 64)
    prior = D.labeled_prior(build_dataset("cityscapes", root, "train"))
    report = L.StreamingLabeler(prior, device="cpu", progress=False).run(src, tmp_path / "pseudo")
    for i in range(3):
        rel = ds.label_path(i).relative_to(ds.root)
        assert rel.as_posix().startswith("gtFine/train/")
        assert tuple(L.read_pseudo_label(tmp_path / "pseudo" / rel).shape) == (32, 64)
    assert report.images == 3 and int(report.kept.sum()) > 0


def test_a_second_pass_reads_the_kept_probabilities_up_to_the_budget(tmp_path):
    from blvnb.data import build_dataset
    from blvnb.data.toycity import write_tree

    root = write_tree(tmp_path / "cs", "cityscapes", n_train=3, n_val=1, size=(32, 64), seed=0, progress=False)
    ds = build_dataset("cityscapes", root, "train", labeled=False)
    model = torch.nn.Conv2d(3, 19, 1)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    one = 19 * 32 * 64 * 2  # one image's float16 probabilities
    src = TeacherSource(model, ds, device="cpu", keep_bytes=2 * one)  # room for two of the three
    first = [src[i] for i in range(3)]
    second = [src[i] for i in range(3)]
    assert len(calls) == 4  # three, then only the one that did not fit
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    fresh = TeacherSource(model, ds, device="cpu", keep_bytes=0)
    assert all(torch.equal(fresh[i], first[i]) for i in range(3))  # the same values as the teacher's
    src.calibrator = lambda logits, dim: logits.softmax(dim)  # other probabilities: nothing kept is reused
    calls.clear()
    src[0]
    assert len(calls) == 1


def _fake_two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_evaluation_under_torchrun_uses_its_local_rank(monkeypatch):
    """Under torchrun (LOCAL_RANK=1) on a 2-GPU machine, evaluate() counts on cuda:1, not cuda:0."""
    _fake_two_gpus(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")
    seen = {}

    class Stop(Exception):
        pass

    class Spy(ev.Confusion):
        def __init__(self, *a, device=None, **kw):
            seen["device"] = torch.device(device)
            raise Stop

    monkeypatch.setattr(ev, "Confusion", Spy)
    for asked in ("auto", "cuda"):
        with pytest.raises(Stop):
            ev.evaluate(torch.nn.Identity(), [], device=asked, progress=False)
        assert seen["device"] == torch.device("cuda", 1), asked
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(Stop):
        ev.evaluate(torch.nn.Identity(), [], device="auto", progress=False)
    assert seen["device"] == torch.device("cuda", 0)


def test_teacher_source_under_torchrun_uses_its_local_rank(monkeypatch):
    _fake_two_gpus(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")
    moved = {}

    class Model(torch.nn.Module):
        def to(self, device):
            moved["device"] = torch.device(device)
            return self

    src = TeacherSource(Model(), [], device="auto")
    assert src.device == moved["device"] == torch.device("cuda", 1)


#: rooms below the engine: they never import the engine or the experiments (DESIGN: one direction of flow)
LOWER = ("data", "models", "losses", "pseudo")
UPPER = ("blvnb.engine", "blvnb.experiments")


def _upward_imports(path: Path, root: Path = ROOT) -> list[str]:
    """Imports of blvnb.engine / blvnb.experiments anywhere in a module (top level or inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                pkg = list(path.relative_to(root).with_suffix("").parts[:-1])
                base = pkg[: len(pkg) - (node.level - 1)]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            names += [f"{names[0]}.{a.name}" for a in node.names]
        else:
            continue
        bad += [f"{path.relative_to(root)}:{node.lineno} imports {n}" for n in names
                if any(n == u or n.startswith(u + ".") for u in UPPER)]
    return sorted(set(bad))


def test_lower_rooms_never_import_the_engine_or_experiments():
    files = [p for room in LOWER for p in sorted((ROOT / "blvnb" / room).rglob("*.py"))]
    assert len(files) > 20  # the rooms are there
    bad = [b for p in files for b in _upward_imports(p)]
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


def test_the_import_check_can_fail(tmp_path):
    mod = tmp_path / "blvnb" / "pseudo" / "x.py"
    mod.parent.mkdir(parents=True)
    mod.write_text("import torch\n\ndef f():\n    from blvnb.engine.loop import train\n"
                   "    import blvnb.experiments.runs\n    from ..engine import teacher\n"
                   "    from .. import experiments\n")
    found = _upward_imports(mod, tmp_path)
    assert [f.split(":")[1].split()[0] for f in found] == ["4", "4", "5", "6", "6", "7"], found


def test_label_relpath_through_subsets_and_fallbacks(tmp_path):
    from torch.utils.data import Subset

    from blvnb.engine.teacher import label_relpath

    class WithLabels:
        root = tmp_path

        def __len__(self):
            return 4

        def label_path(self, i):
            return tmp_path / "gtFine" / "train" / f"c_{i}_gtFine_labelTrainIds.png"

    assert label_relpath(Subset(WithLabels(), [3, 1]), 0) == "gtFine/train/c_3_gtFine_labelTrainIds.png"

    class Named:
        names = ["a", "b"]

    assert label_relpath(Named(), 1) == "b.png"
    assert label_relpath(object(), 7) == "000007.png"


def test_teacher_source_infers_at_size_and_labels_at_the_images_own_size(tmp_path):
    """The release's base_size: the teacher sees the image at half resolution, its labels are full size."""
    from blvnb.data import build_dataset
    from blvnb.data.toycity import write_tree

    root = write_tree(tmp_path / "cs", "cityscapes", n_train=2, n_val=1, size=(32, 64), seed=0, progress=False)
    ds = build_dataset("cityscapes", root, "train", labeled=False)
    model = torch.nn.Conv2d(3, 19, 1)
    seen = []
    model.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    src = TeacherSource(model, ds, device="cpu", size=(16, 32))
    assert tuple(src[0].shape) == (19, 32, 64) and seen == [(16, 32)]
    full = TeacherSource(model, ds, device="cpu")[0]
    assert not torch.equal(full, src[0])  # another input size: other probabilities
