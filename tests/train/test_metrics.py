import math

import numpy as np
import pytest
import torch

from fcnseg.train.metrics import ConfusionMatrix


def test_hand_computed():
    # truth:  0 0 0 1 1 2 | void twice        pred: 0 0 1 1 2 2 | anything
    target = np.array([[0, 0, 0, 1], [1, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 1], [2, 2, 0, 1]])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    assert cm.mat.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    m = cm.compute()
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    # class accuracies 2/3, 1/2, 1/1; class 3 absent everywhere -> NaN, left out
    assert m["mean_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # IU: 2/(3+2-2)=2/3, 1/(2+2-1)=1/3, 1/(1+2-1)=1/2
    assert m["per_class_iu"][:3] == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert math.isnan(m["per_class_iu"][3]) and math.isnan(m["per_class_acc"][3])
    assert m["mean_iu"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert m["fw_iu"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 3 + 1 * 1 / 2) / 6)


def test_class_predicted_but_absent_scores_zero_iu():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2, 0]), torch.tensor([0, 0, 0]))
    m = cm.compute()
    assert m["per_class_iu"][2] == 0.0  # predicted, never true: a real mistake
    assert math.isnan(m["per_class_iu"][1])  # absent from both: undefined
    assert m["mean_iu"] == pytest.approx((2 / 3 + 0) / 2)
    assert math.isnan(m["per_class_acc"][2])


def test_streaming_equals_one_shot_and_shapes_must_match():
    rng = np.random.default_rng(1)
    pred, target = rng.integers(0, 5, (3, 20, 30)), rng.integers(0, 5, (3, 20, 30))
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(pred, target)
    for p, t in zip(pred, target, strict=True):
        b.update(torch.from_numpy(p), torch.from_numpy(t))
    assert torch.equal(a.mat, b.mat)
    with pytest.raises(ValueError, match="prediction"):
        a.update(pred[0], target)
    with pytest.raises(ValueError, match="predictions must lie"):
        a.update(np.full(3, 7), np.zeros(3))


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_direct_per_pixel_computation(seed):
    rng = np.random.default_rng(seed)
    n = 6
    target = rng.integers(0, n, (4, 33, 17))
    target[rng.random(target.shape) < 0.1] = 255
    target[target == 4] = 1  # class 4 absent from the truth
    pred = rng.integers(0, n - 1, target.shape)  # class 5 never predicted
    cm = ConfusionMatrix(n)
    cm.update(pred, target)
    m = cm.compute()
    valid = target != 255
    ious, accs, freq = [], [], []
    for c in range(n):
        t, p = (target == c) & valid, (pred == c) & valid
        inter, union = (t & p).sum(), (t | p).sum()
        ious.append(inter / union if union else np.nan)
        accs.append(inter / t.sum() if t.sum() else np.nan)
        freq.append(t.sum())
    np.testing.assert_allclose(m["per_class_iu"], ious)
    np.testing.assert_allclose(m["per_class_acc"], accs)
    assert m["pixel_acc"] == pytest.approx((pred == target)[valid].mean())
    assert m["mean_iu"] == pytest.approx(np.nanmean(ious))
    assert m["mean_acc"] == pytest.approx(np.nanmean(accs))
    assert m["fw_iu"] == pytest.approx(np.nansum(np.array(freq) * ious) / valid.sum())
