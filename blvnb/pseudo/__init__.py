"""Pseudo labels for self-training: ST, CBST, DA, DARS (DARS, ICCV 2021), streaming over a data set.

* :mod:`blvnb.pseudo.labelers` — the four labellers in memory (:func:`pseudo_label`) and over a data set
  (:class:`~blvnb.pseudo.labelers.StreamingLabeler`), sharing one exact threshold search.
* :mod:`blvnb.pseudo.distribution` — class priors (labeled, source domain, target validation, BLV Eq. 4
  re-estimation), KL divergence, synthetic teacher outputs.
* :mod:`blvnb.pseudo.calibration` — temperature scaling, matrix scaling, histogram binning; DARS Table 5.
* :mod:`blvnb.pseudo.rounds` — the progressive round schedule (labeling ratio and random-scale range).
"""

from blvnb.pseudo.labelers import METHODS, StreamingLabeler, TeacherSource, TensorSource, dars, pseudo_label

__all__ = ["METHODS", "StreamingLabeler", "TeacherSource", "TensorSource", "dars", "pseudo_label"]
