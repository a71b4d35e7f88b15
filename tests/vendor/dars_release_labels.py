# Vendored for tests only: the lines of DARS's released pseudo-labelling code that blvnb's labeller is
# checked against (tests/test_dars_release.py). Not part of the blvnb package.
#
#   repository: https://github.com/CVMI-Lab/DARS
#   commit:     0cfe09ad6758458a497940f4fe7829aad6983f67 (the head)
#   paths:      tool/gen_pseudo_label_utils.py — lines 149-153 (the Cityscapes 1/8 prior), 186-205 (budget,
#               threshold and sampling ratio of DARS), 371-395 (thresholding and per-image sampling);
#               tool/gen_pseudo_label.py — lines 95-100 (the seeding);
#               config/cityscapes/gen_pseudo_label_psp50_cityscapes_split8_crop361_for_round1.yaml —
#               manual_seed: 1, global_num: 2603, labeling_ratio: 0.2
#   license:    Apache License 2.0; a copy of the repository's LICENSE is tests/vendor/LICENSE-DARS.
#
# Changes, marked "# adapted": the lines are wrapped in functions taking what they read from ``args`` and
# from the saved .npy confidence lists (here arrays), the logger calls are dropped, and the GPU tensors of
# the second forward are CPU tensors.

import numpy as np
import torch

# config/cityscapes/gen_pseudo_label_psp50_cityscapes_split8_crop361_for_round1.yaml
MANUAL_SEED = 1
GLOBAL_NUM = 2603
LABELING_RATIO = 0.2

# tool/gen_pseudo_label_utils.py, get_threshold_and_sampling_ratio, dataset == 'cityscapes' and split == '8'
all_pixel_num = 1024 * 2048
valid_ratio = 88.04
class_ratio_prior_list = [32.07, 5.71, 20.7, 0.564, 0.761, 1.054, 0.1696, 0.5014, 13.4993, 0.8981, 3.6445,
                          1.1458,0.1393, 6.0, 0.2949, 0.1954, 0.2341, 0.0818, 0.3917]


def class_j_num_of(j, labeling_ratio=LABELING_RATIO, global_num=GLOBAL_NUM,
                   class_ratio_prior_list=class_ratio_prior_list, valid_ratio=valid_ratio,
                   all_pixel_num=all_pixel_num):  # adapted: a function of what the line reads
    class_j_num = int(float(labeling_ratio) * float(class_ratio_prior_list[j]) / valid_ratio * all_pixel_num * int(global_num))
    return class_j_num


def threshold_and_sampling_ratio(confidences_of_class_j, class_j_num):  # adapted: one class, the .npy as an array
    thres = []
    sp = []
    j = 0
    global_cf_dict = {j: np.asarray(confidences_of_class_j)}
    global_cf_dict[j].sort()
    global_cf_dict[j] = global_cf_dict[j][::-1]  # check if big to small

    if class_j_num > len(global_cf_dict[j]):
        thres.append(global_cf_dict[j][len(global_cf_dict[j]) - 1].item())
        print('class'+str(j)+'overflow')
    else:
        thres.append(global_cf_dict[j][class_j_num - 1].item())

    thres_j = thres[j]
    remain = (global_cf_dict[j] >= thres_j)
    sp_j = float(class_j_num) / float(remain.sum())
    if sp_j >1:
        sp_j = 1
    sp.append(sp_j)
    return thres[0], sp[0]


def second_forward_labels(pseudo_label, max_proba, threshold_list, sample_ratio, classes):  # adapted: one image
    pseudo_label = pseudo_label.clone()
    for j in range(classes):
        threshold = threshold_list[j]
        class_j_pixel = (pseudo_label == j)
        class_j_confidence = max_proba.float() * class_j_pixel.float()
        class_j_confidence_invalid = (class_j_confidence < threshold) * class_j_pixel
        pseudo_label[class_j_confidence_invalid] = 255

    # use obtained sampling ratio to perform random sampling
    sampling_class = [x for x in range(classes)]

    sample_index = 0
    for j in sampling_class:

        class_j_over_threshold = (pseudo_label == j)
        class_j_over_threshold_num = class_j_over_threshold.sum()
        class_j_sample_num = class_j_over_threshold_num.float() * sample_ratio[sample_index]
        num_to_ignore = int(class_j_over_threshold_num - class_j_sample_num)
        sample_index += 1

        mask = torch.nonzero(class_j_over_threshold)    # class_j_over_threshold_num * 2, x y location
        random_indice = torch.randperm(mask.size(0))
        mask = mask[random_indice]                      # shuffle

        chosen_mask = mask[:num_to_ignore]      # where to set to ignore(255)
        pseudo_label[chosen_mask.t().chunk(chunks=2,dim=0)] = 255
    return pseudo_label


def seed_once_per_run(manual_seed=MANUAL_SEED):  # adapted: tool/gen_pseudo_label.py main(), the torch lines
    if manual_seed is not None:
        torch.manual_seed(manual_seed)
