"""Edge inputs of the public surface (issue 22): a value at the edge of what a function takes is either
handled as one would expect or a BlvnbError naming it, never NaN without a word nor a deep traceback."""

from __future__ import annotations

import math

import pytest
import torch

from blvnb.errors import BlvnbError, ConfigError


# --- metrics ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-3.0, math.nan, math.inf])
def test_per_class_iou_refuses_a_confusion_with_negative_or_non_finite_counts(bad):
    from blvnb.engine.evaluate import per_class_accuracy, per_class_iou, pixel_accuracy

    m = torch.eye(3) * 5
    m[0, 1] = bad
    for fn in (per_class_iou, per_class_accuracy, pixel_accuracy):
        with pytest.raises(BlvnbError, match=rf"holds pixel counts \(finite, >= 0\); entry \[0, 1\] of this "
                                             rf"\(3, 3\) matrix is {bad!r}"):
            fn(m)


def test_per_class_iou_of_a_valid_confusion_is_unchanged():
    from blvnb.engine.evaluate import per_class_iou

    m = torch.tensor([[5.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    iou = per_class_iou(m)
    assert iou[0] == pytest.approx(5 / 6) and iou[1] == pytest.approx(3 / 4) and math.isnan(iou[2])


# --- pseudo labels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 0, 5), (1, 3, 4, 0), (1, 0, 4, 5)])
@pytest.mark.parametrize("method", ["st", "cbst", "da", "dars"])
def test_pseudo_label_of_an_empty_map_is_a_clear_error(shape, method):
    from blvnb.pseudo.labelers import pseudo_label

    probs = torch.rand(*shape)
    with pytest.raises(BlvnbError, match=r"probs of shape \(.*\) \(N×C×H×W\) hold no pixel to label"):
        pseudo_label(probs, torch.tensor([0.3, 0.3, 0.4]), method=method, generator=torch.Generator().manual_seed(0))


# --- seeds, as a notebook parameter ----------------------------------------------------------------------

@pytest.mark.parametrize("given, seeds", [(None, None), (0, (0,)), (3, (3,)), ([0, 1], (0, 1)), ((2,), (2,)),
                                          ("0,1,2", (0, 1, 2)), ("0 1", (0, 1)), ("4", (4,)), (range(2), (0, 1))])
def test_seeds_one_int_is_one_seed_and_lists_or_strings_are_several(given, seeds):
    from blvnb.experiments.tables import parse_seeds

    assert parse_seeds(given) == seeds


@pytest.mark.parametrize("bad, match", [(1.5, "1.5 .*float.* neither a seed"), (True, "True .*neither a seed"),
                                        ("zero", "'zero' is not a list of integer seeds"), ([], "names no seed"),
                                        ("", "names no seed"), ([0, 0], "names a seed twice"),
                                        ([0, "1"], "'1' is not a seed"), ({"a": 1}, "neither a seed")])
def test_a_bad_seeds_value_says_how_to_pass_seeds(bad, match):
    from blvnb.experiments.tables import parse_seeds

    with pytest.raises(ConfigError, match=match) as info:
        parse_seeds(bad)
    assert "names a seed twice" in str(info.value) or "-p seeds 0" in str(info.value)


def test_a_table_takes_one_int_as_one_seed():
    from blvnb.experiments import tables

    one = tables.entries("blv-t1", "smoke", 0)
    assert one and {e.seed for e in one} == {0}
    assert [e.key for e in one] == [e.key for e in tables.entries("blv-t1", "smoke", [0])]
    assert tables.profile_seeds("smoke", 5) == (5,) and tables.profile_seeds("quick") == (0, 1, 2)
    with pytest.raises(ConfigError, match="-p seeds 0"):
        tables.entries("blv-t1", "smoke", 0.5)


# --- losses ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["blv", "la", "gcl", "rw"])
def test_a_loss_given_counts_of_another_number_of_classes_names_both(name):
    from blvnb.losses import build_loss

    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    with pytest.raises(ConfigError, match="class_counts has 2 classes but the logits have 3"):
        build_loss(name, torch.tensor([10.0, 1.0]))(logits, labels)
