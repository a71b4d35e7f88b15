"""Parameter counts of the paper-size models against independent references (±5 %); book/models.md lists them.

Built on the meta device: no memory, no weights, no network. The references and where each comes from are
:data:`blvnb.models.param_references.REFERENCES`: counts printed in a paper table, a model-zoo page or a
maintained repository's README, or sums of such a count and of the parts no one publishes, counted layer by
layer from the released configuration by small functions there that use no blvnb module. No reference is a
number blvnb itself produced.
"""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from blvnb.models import param_references as refs
from blvnb.models.registry import build_model

ROWS = refs.REFERENCES


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.model}-{r.part}-{r.classes}" for r in ROWS])
def test_counts(row):
    ours = refs.count(row.model, row.classes, row.part)
    assert abs(ours / row.reference - 1) <= 0.05, \
        f"{row.model} ({row.part}, {row.classes} classes): {ours:.2f}M vs {row.reference:.2f}M ({row.source})"


def test_every_paper_row_has_a_whole_model_reference():
    whole = {r.model for r in ROWS if r.part == "all"}
    rows = {"hr18-ocr", "r50-uper", "r101-uper", "r50-psp", "mitb0-segformer", "swint-knet", "vitb16-uper",
            "r101-deeplabv3p", "r101-deeplabv2", "r101-deeplabv2-red", "mitb5-daformer", "mitb5-hrda"}
    assert rows <= whole, rows - whole


def test_references_use_no_blvnb_model_code():
    """The configuration transcriptions (the ``_``-functions the derived references are summed from) import
    nothing: a reference computed with our own modules would check them against themselves."""
    for name, fn in vars(refs).items():
        if name.startswith("_") and inspect.isfunction(fn) and name not in ("_params", "_pub", "_der"):
            tree = ast.parse(inspect.getsource(fn))
            assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)], name
            assert "blvnb" not in inspect.getsource(fn), name


def test_small_variants_are_small():
    """The quick profile trains on a CPU: every small variant below 12 M parameters."""
    from blvnb.models.registry import list_models

    for name in list_models():
        with torch.device("meta"):
            assert refs.part_count(build_model(name, variant="small"), "all") < 12, name
