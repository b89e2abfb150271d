import pytest
import torch
from torch import nn

from fcnseg import convolutionalize
from fcnseg.backbones import VGG16, AlexNet
from fcnseg.convolutionalize import PointwiseLinear, pointwise_as_linear


def window_scores(classifier, feature_map, kernel):
    """The classifier's fully connected layers run on every k x k window of a feature map."""
    n, _, h, w = feature_map.shape
    out = torch.empty(n, classifier.classifier[-1].out_features, h - kernel + 1, w - kernel + 1)
    out = out.to(feature_map.dtype)
    for i in range(h - kernel + 1):
        for j in range(w - kernel + 1):
            window = feature_map[:, :, i : i + kernel, j : j + kernel]
            out[:, :, i, j] = classifier.classifier(torch.flatten(window, 1))
    return out


@pytest.mark.parametrize(
    "net,size,kernel,grid",
    [(VGG16(num_classes=10), 384, 7, 6), (AlexNet(num_classes=10), 288, 6, 3)],
    ids=["vgg16", "alexnet"],
)
def test_scores_equal_fc_on_every_feature_window(net, size, kernel, grid):
    # Stated on the feature map: VGG/AlexNet pad inside `features`, so a cropped image
    # window's border features differ from the full image's (see the docstring).
    net = net.double().eval()
    fcn = convolutionalize(net)
    convs = [c for c in fcn.classifier if isinstance(c, nn.Conv2d)]
    assert len(convs) == 3 and not any(isinstance(c, nn.Linear) for c in fcn.modules())
    assert convs[0].kernel_size == (kernel, kernel)
    assert all(c.kernel_size == (1, 1) for c in convs[1:])
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    with torch.inference_mode():
        scores = fcn(x)
        expected = window_scores(net, net.features(x), kernel)
    assert scores.shape == (1, 10, grid, grid)
    torch.testing.assert_close(scores, expected)
    # At the classifier's own input size the converted net is the classifier.
    with torch.inference_mode():
        own = torch.randn(2, 3, 224, 224, dtype=torch.float64)
        torch.testing.assert_close(fcn(own).flatten(1), net(own))


class Unpadded(nn.Module):
    """A small classifier without padding: 22x22 input, stride 4."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 5)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_unpadded_scores_equal_classifier_on_every_image_window():
    net = Unpadded().double().eval()
    fcn = convolutionalize(net)
    x = torch.randn(2, 3, 42, 46, dtype=torch.float64)
    with torch.inference_mode():
        scores = fcn(x)
        assert scores.shape == (2, 5, 6, 7)
        for i in range(6):
            for j in range(7):
                window = x[:, :, 4 * i : 4 * i + 22, 4 * j : 4 * j + 22]
                torch.testing.assert_close(scores[:, :, i, j], net(window))


def test_original_untouched_and_bad_input():
    net = Unpadded()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fcn = convolutionalize(net)
    fcn.classifier[0].weight.data.zero_()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    with pytest.raises(TypeError, match="features"):
        convolutionalize(nn.Linear(3, 3))
    net.classifier[0] = nn.Linear(100, 32)
    with pytest.raises(ValueError, match="square map"):
        convolutionalize(net)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pointwise_linear_equals_the_convolution(memory_format):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 1).double().to(memory_format=memory_format)
    x = torch.randn(2, 6, 7, 9, dtype=torch.float64).contiguous(memory_format=memory_format)
    linear = PointwiseLinear(conv)
    out = linear(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, conv(x), rtol=1e-12, atol=1e-12)
    assert linear.state_dict().keys() == conv.state_dict().keys()
    assert linear.weight is conv.weight  # shared: a cast or load reaches both
    for bad in (nn.Conv2d(6, 5, 3), nn.Conv2d(6, 5, 1, stride=2), nn.Conv2d(6, 6, 1, groups=2)):
        with pytest.raises(ValueError, match="1x1"):
            PointwiseLinear(bad)


def test_pointwise_as_linear_keeps_the_fcn_output():
    import fcnseg
    from tests.conftest import randomize_scores

    torch.manual_seed(0)
    model = randomize_scores(fcnseg.build_model("fcn8s", 3, width=0.125), std=0.1).eval().double()
    x = torch.randn(1, 3, 41, 57, dtype=torch.float64)
    expected = model(x)
    keys = model.state_dict().keys()
    replaced = pointwise_as_linear(model)
    assert set(replaced) == {"fc7", "score_fr", "score_pool4", "score_pool3"}
    assert model.state_dict().keys() == keys
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
