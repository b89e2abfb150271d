"""Both heads of SIFT Flow's nets evaluated, each on the dataset of its labels."""

import numpy as np
import pytest
import torch

import fcnseg
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import eval_transform
from fcnseg.nets.fcn import Head
from fcnseg.train.engine import evaluate
from fcnseg.train.heads import evaluate_heads
from tests.conftest import randomize_scores
from tests.data.test_siftflow import siftflow  # noqa: F401 (the fixture)


def test_each_head_on_its_labels(siftflow):  # noqa: F811
    model = randomize_scores(fcnseg.build_model("fcn8s-sem-geo", 33, width=0.0625), std=1.0)
    sets = [build_dataset(n, siftflow, "trainval", eval_transform("siftflow"))
            for n in ("siftflow", "siftflow-geometric")]  # fmt: skip
    semantic, geometric = evaluate_heads(model, sets, torch.device("cpu"), progress=False)
    assert len(semantic["per_class_iu"]) == 33 and len(geometric["per_class_iu"]) == 3
    # The same numbers by hand: each head's argmax against its labels.
    for k, (metrics, data) in enumerate(zip((semantic, geometric), sets, strict=True)):
        cm = fcnseg.ConfusionMatrix(data.info.num_classes)
        with torch.inference_mode():
            for image, label in data:
                cm.update(model.eval()(image[None])[k][0].argmax(0), label)
        expected = cm.compute()
        assert metrics["pixel_acc"] == pytest.approx(expected["pixel_acc"])
        np.testing.assert_allclose(metrics["per_class_iu"], expected["per_class_iu"])


def test_a_one_head_net_is_its_own_head(siftflow):  # noqa: F811
    model = randomize_scores(fcnseg.build_model("fcn8s", 33, width=0.0625), std=1.0)
    data = build_dataset("siftflow", siftflow, "trainval", eval_transform("siftflow"))
    (metrics,) = evaluate_heads(model, [data], torch.device("cpu"), progress=False)
    expected = evaluate(model, data, 33, torch.device("cpu"), progress=False)
    for key in ("per_class_iu", "per_class_acc", "pixel_acc"):
        np.testing.assert_array_equal(metrics[key], expected[key])


def test_head_count_must_match():
    model = fcnseg.build_model("fcn32s-sem-geo", 33, width=0.0625)
    with pytest.raises(ValueError, match="2 heads but 1 datasets"):
        evaluate_heads(model, [None], torch.device("cpu"))
    x = torch.randn(1, 3, 20, 20)
    with torch.inference_mode():
        assert Head(model.eval(), 1)(x).shape == (1, 3, 20, 20)
