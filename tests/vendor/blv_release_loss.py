# Vendored for tests only: the lines of BLV's released loss that blvnb's ``balance="released"`` and
# ``balance="first-upload"`` are checked against (tests/test_blv.py).
#
#   repository: https://github.com/grantword8/BLV
#   path:       fully_sup/mmseg/models/losses/blv_loss.py
#   commits:    494d42829fbdce13de9a8d48377c54eca2ab35f4 ("initial commit", June 2023)
#               e08cc6cbfe158fedbfaecc82196a8c2ff5725b70 ("Fix blv_loss.py bug", 17 July 2023, the head)
#   license:    the repository has no license file (none at either commit); only the few lines below are
#               copied, for comparison in tests, and the file is not part of the blvnb package.
#
# The two commits differ in one line of ``__init__`` (the class weight); ``forward`` is the same. Adapted,
# and marked ``# adapted``: ``torch.cuda.FloatTensor`` -> ``torch.FloatTensor`` (to run on a CPU), the
# mmseg registry decorator and the ``loss_name`` property dropped, and mmseg's
# ``weight_reduce_loss(loss, weight=None, reduction="mean", avg_factor=None)`` written out as what it
# computes in that case, ``loss.mean()`` (the mean over *all* pixels, ignored ones included). The noise
# comes from ``self.sampler.sample(shape)``, exactly as in the release, so a test injects its own noise
# by replacing ``sampler`` with an object whose ``sample`` returns it.

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import normal


class BlvLossE08cc6c(nn.Module):
    """The current release (e08cc6c)."""

    def __init__(self, cls_num_list, sigma=4, loss_name='BlvLoss'):
        super().__init__()
        cls_list = torch.FloatTensor(cls_num_list)  # adapted: torch.cuda.FloatTensor in the release
        frequency_list = torch.log(cls_list)
        self.frequency_list = torch.log(sum(cls_num_list)) - frequency_list
        self.reduction = 'mean'
        self.sampler = normal.Normal(0, sigma)
        self._loss_name = loss_name

    def forward(self, pred, target, weight=None, ignore_index=255, avg_factor=None, reduction_override=None):
        viariation = self.sampler.sample(pred.shape).clamp(-1, 1).to(pred.device)

        pred = pred + (viariation.abs().permute(0, 2, 3, 1) / self.frequency_list.max() * self.frequency_list).permute(0, 3, 1, 2)

        loss = F.cross_entropy(pred, target, reduction='none',  ignore_index=ignore_index)
        return loss.mean()  # adapted: mmseg's weight_reduce_loss(loss, None, 'mean', None)


class BlvLoss494d428(BlvLossE08cc6c):
    """The first upload (494d428): only the class-weight line of ``__init__`` differs."""

    def __init__(self, cls_num_list, sigma=4, loss_name='BlvLoss'):
        nn.Module.__init__(self)
        cls_list = torch.FloatTensor(cls_num_list)  # adapted: torch.cuda.FloatTensor in the release
        frequency_list = torch.log(cls_list)
        self.frequency_list = frequency_list.max() - frequency_list
        self.reduction = 'mean'
        self.sampler = normal.Normal(0, sigma)
        self._loss_name = loss_name


#: ``cls_num_list`` of every released ``*_blv.py`` config (e.g. configs/pspnet/pspnet_r50-d8_512x1024_40k_cityscapes_blv.py)
RELEASED_CLS_NUM_LIST = [16099193283, 4155428633, 8478285320, 925367586, 317481282, 531401266,
                         67288808, 40463971, 3810296251, 1074861777, 6784666433, 181828023,
                         15321782, 259269812, 564950248, 184638969, 32522117, 15799033,
                         2718199]
