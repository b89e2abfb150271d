import pytest
import torch
from torch import nn

from fcnseg import convolutionalize
from fcnseg.nets.backbones import VGG16, AlexNet
from fcnseg.nets.convolutionalize import WindowLinear, fully_connected_as_matmuls
from fcnseg.nets.fcn import fcn_from_classifier


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
@pytest.mark.parametrize("kernel, padding", [(1, 0), (1, 1), (7, 0), (3, 1), (5, 2)])
def test_window_linear_equals_the_convolution(memory_format, kernel, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, kernel, padding=padding).double().to(memory_format=memory_format)
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = conv(x)
        for block in (1024, 3):  # one product; blocks of 3 output channels (not dividing 10)
            linear = WindowLinear(conv, block=block)
            torch.testing.assert_close(linear(x), expected, rtol=1e-12, atol=1e-12)
        linear = WindowLinear(conv, max_positions=10)  # too many windows: the convolution
        torch.testing.assert_close(linear(x), expected, rtol=1e-12, atol=1e-12)
    assert linear.state_dict().keys() == conv.state_dict().keys()
    assert linear.weight is conv.weight  # shared: a cast or load reaches both
    out = linear(x)  # with gradients on: the convolution, differentiable
    out.sum().backward()
    assert conv.weight.grad is not None


def test_window_linear_needs_a_plain_convolution():
    for bad in (nn.Conv2d(6, 5, 3, stride=2), nn.Conv2d(6, 6, 1, groups=2),
                nn.Conv2d(6, 5, 3, dilation=2), nn.Conv2d(6, 5, 3, padding="same")):  # fmt: skip
        with pytest.raises(ValueError, match="plain stride-1"):
            WindowLinear(bad)


@pytest.mark.parametrize("pad", [100, 1])
def test_fully_connected_as_matmuls_keeps_the_fcn_output(pad):
    import fcnseg
    from tests.conftest import randomize_scores

    torch.manual_seed(0)
    model = fcnseg.build_model("fcn8s", 3, width=0.125, pad=pad).eval().double()
    model = randomize_scores(model, std=0.1)
    x = torch.randn(2, 3, 41, 57, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        keys = model.state_dict().keys()
        replaced = fully_connected_as_matmuls(model)
        assert set(replaced) == {"fc6", "fc7", "score_fr", "score_pool4", "score_pool3"}
        assert model.state_dict().keys() == keys
        torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "backbone,final_kernel", [(VGG16(width=0.125), 64), (AlexNet(width=0.125), 63)]
)
def test_fcn_from_classifier_leaves_the_classifier_alone(backbone, final_kernel):
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    layout = [(type(m), getattr(m, "padding", None), getattr(m, "ceil_mode", None))
              for m in backbone.modules()]  # fmt: skip
    fcn = fcn_from_classifier(backbone, num_classes=3, final_kernel=final_kernel)
    assert fcn.features[0].padding == (100, 100)  # the FCN's copy is adapted...
    assert all(m.ceil_mode for m in fcn.features if isinstance(m, nn.MaxPool2d))
    after = [(type(m), getattr(m, "padding", None), getattr(m, "ceil_mode", None))
             for m in backbone.modules()]  # fmt: skip
    assert after == layout  # ...the classifier's layers are not
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    # No tensor is shared: training the FCN cannot change the classifier.
    theirs = {p.data_ptr() for p in backbone.parameters()}
    assert not theirs & {p.data_ptr() for p in fcn.parameters()}
    with torch.no_grad():
        for p in fcn.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
