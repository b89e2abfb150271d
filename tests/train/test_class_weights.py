import numpy as np
import torch

from fcnseg.data.dataset import SegmentationDataset
from fcnseg.data.info import DatasetInfo
from fcnseg.train.loss import enet_weights, label_counts, median_frequency_weights

V = 255  # void


class Labels(SegmentationDataset):
    """Hand-written label maps with blank images; classes a, b, c, d (d never occurs)."""

    info = DatasetInfo("hand", ("a", "b", "c", "d"), ((0, 0, 0),) * 4)

    def __init__(self, labels):
        super().__init__()
        self.labels = [np.array(x, np.uint8) for x in labels]

    def __len__(self):
        return len(self.labels)

    def load_raw(self, index):
        label = self.labels[index]
        return np.zeros((*label.shape, 3), np.uint8), label, f"label {index}"


DATA = Labels(
    [
        [[0, 0, 1], [1, V, 0]],  # a: 3, b: 2, void: 1 -> 5 labelled pixels
        [[2, 2], [2, 0]],  # a: 1, c: 3 -> 4 labelled pixels
        [[1, V, V, 1]],  # b: 2 -> 2 labelled pixels
    ]
)


def test_label_counts_by_hand():
    pixels, present = label_counts(DATA)
    np.testing.assert_array_equal(pixels, [4, 4, 3, 0])
    # labelled pixels of the images each class occurs in; void counts in neither
    np.testing.assert_array_equal(present, [5 + 4, 5 + 2, 4, 0])


def test_median_frequency_weights_by_hand():
    """freq_c = pixels of c / pixels of the images containing c; weight = median(freq) / freq_c,
    the median over the classes that occur (Eigen & Fergus); a class that never occurs
    weighs 0."""
    freq = {"a": 4 / 9, "b": 4 / 7, "c": 3 / 4}
    median = 4 / 7  # of 4/9 < 4/7 < 3/4; a median counting d's 0 would be (4/9 + 4/7) / 2
    expected = [median / freq["a"], median / freq["b"], median / freq["c"], 0.0]
    w = median_frequency_weights(DATA)
    assert w.dtype == torch.float32 and w.shape == (4,)
    assert not w.isnan().any()
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), [9 / 7, 1, 16 / 21, 0], rtol=1e-6)


def test_enet_weights_by_hand():
    """ENet's 1 / ln(1.02 + p_c), p_c the class's share of the 11 labelled pixels (void
    counts nowhere); the rarer class weighs more; a class that never occurs weighs 0."""
    share = np.array([4, 4, 3]) / 11
    expected = [*(1 / np.log(1.02 + share)), 0.0]
    w = enet_weights(DATA)
    assert w.dtype == torch.float32 and w.shape == (4,)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert w[2] > w[0] == w[1]
    np.testing.assert_allclose(
        enet_weights(DATA, c=2.0)[0].item(), 1 / np.log(2 + 4 / 11), rtol=1e-6
    )
