"""Caffe weights into fcnseg's nets: a caffemodel written from known weights (by protobuf's
encoder, under the reference's layer names as its net.py spells them) converts into a
model whose logits equal those of the same model given the weights directly."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import fcnseg
from fcnseg.errors import ConfigError
from fcnseg.nets.caffe_convert import is_bilinear
from fcnseg.nets.caffe_names import REFERENCE_NAMES
from fcnseg.nets.weights import WeightsError
from tests.conftest import randomize_scores
from tests.nets.caffe_writer import write_caffemodel
from tests.nets.test_reference import assert_relative_close, dense_bilinear

VGG16 = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
         "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")  # fmt: skip
ALEXNET = ("conv1", "conv2", "conv3", "conv4", "conv5")
UP32 = (("upscore", 64),)
UP16 = (("upscore2", 4), ("upscore16", 32))
UP8 = (("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16))


@dataclass(frozen=True)
class Reference:
    """A reference net.py's layer names: the backbone's convolutions (in order), the
    deconvolutions of each head (name, kernel), each head's suffix, the streams
    (module prefix = name suffix, unseparated), a renamed first convolution, and
    fixed Scale layers before a skip's score layer (name, tap, value)."""

    convs: tuple[str, ...]
    deconvs: tuple[tuple[str, int], ...]
    heads: tuple[str, ...] = ("",)
    streams: tuple[str, ...] = ("",)
    first_conv: str | None = None
    scales: tuple[tuple[str, str, float], ...] = ()


# One line per registered model that has a Caffe reference.
REFERENCES = {
    "fcn32s": Reference(VGG16, UP32),
    "fcn16s": Reference(VGG16, UP16),
    "fcn8s": Reference(VGG16, UP8),
    "fcn8s-atonce": Reference(
        VGG16, UP8, scales=(("scale_pool4", "pool4", 0.01), ("scale_pool3", "pool3", 0.0001))
    ),
    "fcn-alexnet": Reference(ALEXNET, (("upscore", 63),)),
    "fcn-alexnet-caffe": Reference(ALEXNET, (("upscore", 63),)),
    "fcn32s-color-d": Reference(VGG16, UP32, first_conv="conv1_1_bgrd"),
    "fcn32s-color-hha": Reference(VGG16, UP32, streams=("color", "hha")),
    "fcn32s-sem-geo": Reference(VGG16, UP32, heads=("_sem", "_geo")),
    "fcn16s-sem-geo": Reference(VGG16, UP16, heads=("_sem", "_geo")),
    "fcn8s-sem-geo": Reference(VGG16, UP8, heads=("_sem", "_geo")),
}
WIDTH, CLASSES = 0.0625, 5


def caffe_layers(name: str, model: torch.nn.Module) -> list:
    """The reference's layers (name, type, blobs) holding ``model``'s weights: convolutions
    from the state_dict, deconvolutions the bilinear kernel (or the learned weights)."""
    ref, state = REFERENCES[name], {k: v.numpy() for k, v in model.state_dict().items()}
    layers = []
    for stream in ref.streams:
        prefix = f"{stream}." if stream else ""
        indices = sorted(
            {int(k.split(".")[-2]) for k in state if k.startswith(prefix + "features.")}
        )
        convs = (ref.first_conv or ref.convs[0],) + ref.convs[1:]
        for conv, i in zip(convs, indices, strict=True):
            blobs = [state[f"{prefix}features.{i}.{p}"] for p in ("weight", "bias")]
            layers.append((conv + stream, "Convolution", blobs))
        modules = dict.fromkeys(  # fc6, fc7 and the score layers, in order
            k[len(prefix) :].rsplit(".", 1)[0]
            for k in state
            if k.startswith(prefix) and "features." not in k and ".upscore" not in "." + k
        )
        for module in modules:
            blobs = [state[f"{prefix}{module}.{p}"] for p in ("weight", "bias")]
            layers.append((module + stream, "Convolution", blobs))
    for name, tap, value in ref.scales:  # Caffe's Scale: one factor per channel of the tap
        channels = state[f"score_{tap}.weight"].shape[1]
        layers.append((name, "Scale", [np.full(channels, value, np.float32)]))
    for head in ref.heads:
        score = next(k for k in state if k.endswith(f"score_fr{head}.weight"))
        for deconv, kernel in ref.deconvs:
            learned = state.get(f"{deconv}{head}.weight")
            blob = dense_bilinear(state[score].shape[0], kernel).numpy()
            layers.append((deconv + head, "Deconvolution", [blob if learned is None else learned]))
    return layers


def source_model(name: str, **kw) -> torch.nn.Module:
    model = fcnseg.build_model(name, CLASSES, width=WIDTH, **kw)
    # The at-once net scales pool3 by 1e-4: large score weights keep that skip visible.
    return randomize_scores(model, std=1.0 if name == "fcn8s-atonce" else 0.01).eval()


def logits(model: torch.nn.Module, size=(37, 45)) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    x = torch.randn(2, model.in_channels, *size, dtype=torch.float64)
    with torch.inference_mode():
        out = model.double().eval()(x)
    return out if isinstance(out, tuple) else (out,)


def assert_same_logits(converted: torch.nn.Module, source: torch.nn.Module) -> None:
    for got, expected in zip(logits(converted), logits(source), strict=True):
        assert_relative_close(got, expected)


def test_every_model_with_a_reference_is_in_the_table():
    assert set(REFERENCES) == set(REFERENCE_NAMES)
    assert set(REFERENCES) <= set(fcnseg.list_models())


@pytest.mark.parametrize("name", REFERENCES)
def test_converted_model_has_the_logits_of_its_weights(tmp_path, name):
    source = source_model(name)
    path = tmp_path / f"{name}.caffemodel"
    write_caffemodel(path, caffe_layers(name, source))
    converted = fcnseg.build_model(name, weights=path, width=WIDTH)
    assert converted.config == source.config  # classes read from the file
    assert_same_logits(converted, source)


@pytest.mark.parametrize("name", ["fcn8s", "fcn32s-color-hha", "fcn16s-sem-geo"])
@pytest.mark.parametrize(
    "encoding",
    [{"legacy": True}, {"packed": False}, {"double": True}, {"legacy": True, "packed": False}],
    ids=["legacy-layers", "unpacked", "double", "legacy-unpacked"],
)
def test_every_encoding_converts(tmp_path, name, encoding):
    source = source_model(name)
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, caffe_layers(name, source), **encoding)
    assert_same_logits(fcnseg.build_model(name, weights=path, width=WIDTH), source)


def test_learned_upsampling_loads_into_a_learnable_model(tmp_path):
    source = source_model("fcn8s", learnable_upsampling=True)
    with torch.no_grad():
        for up in ("upscore2", "upscore_pool4", "upscore8"):
            getattr(source, up).weight.add_(0.01 * torch.randn_like(getattr(source, up).weight))
    path = tmp_path / "learned.caffemodel"
    write_caffemodel(path, caffe_layers("fcn8s", source))
    learnable = fcnseg.build_model("fcn8s", weights=path, width=WIDTH, learnable_upsampling=True)
    assert_same_logits(learnable, source)
    # The fixed model cannot take them: it says which layers and what to do.
    with pytest.raises(WeightsError) as e:
        fcnseg.build_model("fcn8s", weights=path, width=WIDTH)
    assert "upscore2, upscore_pool4, upscore8 hold learned upsampling" in str(e.value)
    assert "learnable upsampling" in str(e.value)


def test_bilinear_blobs_load_into_a_learnable_model_as_bilinear(tmp_path):
    source = source_model("fcn16s")
    path = tmp_path / "fixed.caffemodel"
    write_caffemodel(path, caffe_layers("fcn16s", source))
    learnable = fcnseg.build_model("fcn16s", weights=path, width=WIDTH, learnable_upsampling=True)
    assert is_bilinear(learnable.upscore2.weight.detach().numpy())
    assert_same_logits(learnable, source)


def test_is_bilinear_checks_the_diagonal_and_the_rest():
    kernel = dense_bilinear(3, 4).numpy().astype(np.float32)
    assert is_bilinear(kernel)
    for change in [(0, 0, 1, 1), (0, 1, 1, 1)]:  # on the diagonal, off it
        other = kernel.copy()
        other[change] += 1e-3
        assert not is_bilinear(other)
    assert not is_bilinear(kernel[:, :, :3, :3])


def write_reference(tmp_path, name, **kw):
    path = tmp_path / f"{name}.caffemodel"
    write_caffemodel(path, caffe_layers(name, source_model(name, **kw)))
    return path


def test_another_architecture_names_missing_and_left_over_layers(tmp_path):
    path = write_reference(tmp_path, "fcn8s")
    with pytest.raises(WeightsError) as e:
        fcnseg.build_model("fcn16s", weights=path, width=WIDTH)
    assert str(e.value) == (
        f"{path} does not fit fcn16s: missing layers: upscore16; "
        "layers left over: score_pool3, upscore_pool4, upscore8"
    )


def test_another_width_names_the_layers_and_shapes(tmp_path):
    path = write_reference(tmp_path, "fcn32s")
    with pytest.raises(WeightsError) as e:
        fcnseg.build_model("fcn32s", weights=path, width=2 * WIDTH)
    message = str(e.value)
    assert message.startswith(f"{path} does not fit fcn32s: shape mismatch: ")
    assert "conv1_1 (blob 0: file (4, 3, 3, 3), model (8, 3, 3, 3))" in message
    assert "\n" not in message


def test_torchvision_alexnet_does_not_take_caffenet_weights(tmp_path):
    path = write_reference(tmp_path, "fcn-alexnet-caffe")
    with pytest.raises(WeightsError, match="does not fit fcn-alexnet: shape mismatch: conv1 "):
        fcnseg.build_model("fcn-alexnet", weights=path, width=WIDTH)


def test_batch_norm_and_class_count_are_refused(tmp_path):
    path = write_reference(tmp_path, "fcn32s")
    with pytest.raises(WeightsError, match="no batch norm"):
        fcnseg.build_model("fcn32s", weights=path, width=WIDTH, batch_norm=True)
    with pytest.raises(ConfigError, match=f"predicts {CLASSES}"):
        fcnseg.build_model("fcn32s", CLASSES + 1, weights=path, width=WIDTH)


def test_converted_file_of_fcnseg_loads_too(tmp_path):
    source = source_model("fcn16s")
    path = tmp_path / "state.pt"
    torch.save(source.state_dict(), path)
    assert_same_logits(fcnseg.build_model("fcn16s", weights=path, width=WIDTH), source)


def test_at_once_scales_are_checked_not_loaded(tmp_path):
    layers = caffe_layers("fcn8s-atonce", source_model("fcn8s-atonce"))
    path = tmp_path / "atonce.caffemodel"
    write_caffemodel(path, [layer for layer in layers if layer[1] != "Scale"])
    with pytest.raises(WeightsError, match="missing layers: scale_pool4, scale_pool3$"):
        fcnseg.build_model("fcn8s-atonce", weights=path, width=WIDTH)
    unscaled = [(n, k, [np.ones_like(b[0])] if k == "Scale" else b) for n, k, b in layers]
    write_caffemodel(path, unscaled)
    with pytest.raises(WeightsError) as e:
        fcnseg.build_model("fcn8s-atonce", weights=path, width=WIDTH)
    assert str(e.value).endswith(
        "fixed scales differ: scale_pool4 (file 1, model 0.01), scale_pool3 (file 1, model 0.0001)"
    )
    # The same weights without the Scale layers are an FCN-8s's.
    with pytest.raises(WeightsError, match="layers left over: scale_pool4, scale_pool3$"):
        fcnseg.build_model("fcn8s", weights=path, width=WIDTH)
