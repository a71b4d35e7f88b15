"""Pseudo labels for self-training: ST, CBST, DA, DARS (DARS, ICCV 2021), streaming over a data set.

* :mod:`blvnb.pseudo.labelers` — the four labellers in memory (:func:`pseudo_label`), to be read against
  DARS Algorithm 1; their parts: :mod:`~blvnb.pseudo.thresholds` (the one exact threshold search, the
  budgets), :mod:`~blvnb.pseudo.sampling` (DARS's integer quotas and seeded random subsets) and
  :mod:`~blvnb.pseudo.streaming` (:class:`StreamingLabeler`: the same labellers over a data set, resumable).
* :mod:`blvnb.pseudo.distribution` — class priors (labeled, source domain, target validation, BLV Eq. 4
  re-estimation), the one counts → shares function, KL divergence, synthetic teacher outputs.
* :mod:`blvnb.pseudo.calibration` — temperature scaling, matrix scaling, histogram binning; DARS Table 5.
* :mod:`blvnb.pseudo.rounds` — the progressive round schedule (labeling ratio and random-scale range).

A teacher model's probabilities on a data set come from the engine (:class:`blvnb.engine.teacher.TeacherSource`):
this package never imports the engine.
"""

from blvnb.pseudo.labelers import METHODS, dars, pseudo_label
from blvnb.pseudo.streaming import StreamingLabeler, TensorSource

__all__ = ["METHODS", "StreamingLabeler", "TensorSource", "dars", "pseudo_label"]
