"""The top-level public API: ``fcnseg.Segmenter`` and ``fcnseg.ConfusionMatrix`` (issue #9)."""

import copy

import numpy as np
import torch
from PIL import Image

import fcnseg
import fcnseg.deploy.inference
import fcnseg.train.metrics
from tests.conftest import randomize_scores


def test_segmenter_and_confusion_matrix_are_top_level():
    assert fcnseg.Segmenter is fcnseg.deploy.inference.Segmenter
    assert fcnseg.ConfusionMatrix is fcnseg.train.metrics.ConfusionMatrix
    assert {"Segmenter", "ConfusionMatrix"} <= set(fcnseg.__all__)


def test_top_level_segmenter_labels_like_the_model():
    model = randomize_scores(fcnseg.build_model("fcn8s", 4, width=0.125), std=0.1).eval()
    # Smooth colour regions: the untrained net answers pixel noise with one class everywhere.
    blocks = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    image = np.array(Image.fromarray(blocks).resize((53, 37), Image.BILINEAR))
    # The model's own input, built here by hand: RGB in [0, 1] with ImageNet's mean and std.
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.from_numpy(image).float() / 255 - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = model(x).argmax(1)[0].numpy()
    assert len(np.unique(expected)) > 1  # random scores: a constant map would hide a mix-up

    seg = fcnseg.Segmenter(copy.deepcopy(model), precision="fp32", device="cpu")
    (labels,) = seg.predict([image])
    assert labels.shape == image.shape[:2]
    cm = fcnseg.ConfusionMatrix(4)
    cm.update(labels, expected)
    assert cm.compute()["pixel_acc"] > 0.999  # a near-tie may flip between memory layouts
