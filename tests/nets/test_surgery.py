import pytest
import torch

import fcnseg
from fcnseg import WeightsError, init_from
from fcnseg.nets.surgery import init_streams
from tests.conftest import randomize_scores

# torchvision's vgg16 state_dict, written out from its layout: conv indices and shapes.
VGG16_CONVS = {
    0: (64, 3),
    2: (64, 64),
    5: (128, 64),
    7: (128, 128),
    10: (256, 128),
    12: (256, 256),
    14: (256, 256),
    17: (512, 256),
    19: (512, 512),
    21: (512, 512),
    24: (512, 512),
    26: (512, 512),
    28: (512, 512),
}
VGG16_FCS = {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}


def torchvision_vgg16_state():
    state = {}
    for i, (out, inp) in VGG16_CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(out, inp, 3, 3) * 0.01
        state[f"features.{i}.bias"] = torch.randn(out)
    for i, (out, inp) in VGG16_FCS.items():
        state[f"classifier.{i}.weight"] = torch.randn(out, inp) * 0.01
        state[f"classifier.{i}.bias"] = torch.randn(out)
    return state


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    state = torchvision_vgg16_state()
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return path, state


def test_transplant_vgg16(vgg16_file):
    path, state = vgg16_file
    model = fcnseg.build_model("fcn32s", 21, backbone_weights=path)
    own = model.state_dict()
    for i in VGG16_CONVS:
        torch.testing.assert_close(own[f"features.{i}.weight"], state[f"features.{i}.weight"])
    torch.testing.assert_close(
        own["fc6.weight"], state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    )
    torch.testing.assert_close(own["fc6.bias"], state["classifier.0.bias"])
    torch.testing.assert_close(own["fc7.weight"], state["classifier.3.weight"][..., None, None])
    assert not any(k.startswith("classifier") for k in own)  # fc8 dropped
    assert own["score_fr.weight"].abs().sum() == 0 and own["score_fr.bias"].abs().sum() == 0


def test_wrong_files_fail_clearly(vgg16_file, tmp_path):
    path, state = vgg16_file
    with pytest.raises(WeightsError, match="no such weight file"):
        fcnseg.build_model("fcn32s", 21, backbone_weights=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable weight file"):
        fcnseg.build_model("fcn32s", 21, backbone_weights=junk)
    # The VGG16 file does not fit AlexNet: the error names the keys.
    with pytest.raises(WeightsError, match=r"unexpected keys: .*features\.12\.weight"):
        fcnseg.build_model("fcn-alexnet", 21, backbone_weights=path)
    broken = dict(state)
    del broken["features.2.bias"]
    broken["classifier.3.weight"] = torch.zeros(10, 10)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(WeightsError) as err:
        fcnseg.build_model("fcn8s", 21, backbone_weights=bad)
    assert "missing keys: features.2.bias" in str(err.value)
    assert "classifier.3.weight (file (10, 10), model (4096, 4096))" in str(err.value)


def scene(size):
    """An input with regions (a coarse random field, smoothly upsampled), not white noise:
    a random net's features then differ across the image."""
    coarse = torch.randn(1, 3, 4, 4, dtype=torch.float64) * 2
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")


# Argmax agreement of the finer net with the coarser one it starts from, measured at these
# sizes (seed 0, width 0.25, 5 classes): fcn32s -> fcn16s 1.0, 0.9876, 0.9264;
# fcn16s -> fcn8s 1.0, 0.9659, 0.9582. The thresholds sit just below.
AGREEMENT = {
    ("fcn32s", "fcn16s"): {(1, 1): 1.0, (37, 50): 0.985, (64, 96): 0.92},
    ("fcn16s", "fcn8s"): {(1, 1): 1.0, (37, 50): 0.96, (64, 96): 0.955},
}


@pytest.mark.parametrize("coarse,fine", list(AGREEMENT))
def test_staged_init_starts_from_coarser_scores(coarse, fine):
    for size, threshold in AGREEMENT[coarse, fine].items():
        # The coarser net stands in for a trained one: random score layers, biases
        # centred on this input so that its predictions vary over the image.
        source = randomize_scores(fcnseg.build_model(coarse, 5, width=0.25), std=0.1)
        source = source.double().eval()
        x = scene(size)
        with torch.inference_mode():
            source.score_fr.bias -= source(x).mean((0, 2, 3))
        target = fcnseg.build_model(fine, 5, width=0.25, init_from_model=source).double().eval()
        copied = init_from(target, source)
        assert "score_fr.weight" in copied and "fc6.weight" in copied
        new_up = target.upsamplers[-1]
        with torch.inference_mode():
            # The new skip scores zero, so the fused scores are the coarser net's, 2x upsampled.
            expected = getattr(target, new_up)(source.score(x))
            torch.testing.assert_close(target.score(x), expected, rtol=1e-12, atol=1e-12)
            # The final outputs differ only by how bilinear upsampling composes (2x then
            # 16x is not 32x: the interpolation nodes fall between the 2x samples).
            before = source(x).argmax(1)
            agree = (target(x).argmax(1) == before).double().mean().item()
        assert agree >= threshold, f"{size}: {agree:.4f}"
        assert size == (1, 1) or before.unique().numel() > 1  # not one class everywhere
    # Once the new skip learns something, the scores differ.
    randomize_scores(target, std=0.1)
    with torch.inference_mode():
        assert not torch.allclose(target.score(x), getattr(target, new_up)(source.score(x)))


def test_init_from_names_the_file_and_both_class_counts(tmp_path):
    torch.save({"model": fcnseg.build_model("fcn32s", 3, width=0.0625).state_dict()},
               tmp_path / "best.pt")  # fmt: skip
    with pytest.raises(WeightsError) as err:
        init_from(fcnseg.build_model("fcn16s", 5, width=0.0625), tmp_path / "best.pt")
    assert str(err.value) == (
        f"cannot init from {tmp_path / 'best.pt'}: it predicts 3 classes, the model 5; "
        "start from a net trained on the same 5 classes"
    )
    with pytest.raises(WeightsError, match="from the source: it predicts 7 classes, the model 5"):
        init_from(
            fcnseg.build_model("fcn16s", 5, width=0.25), fcnseg.build_model("fcn32s", 7, width=0.25)
        )


def test_init_from_names_the_tensors_of_another_shape(tmp_path):
    target = fcnseg.build_model("fcn16s", 5, width=0.0625)
    with pytest.raises(WeightsError) as err:
        init_from(target, fcnseg.build_model("fcn32s", 5, width=0.125))
    assert str(err.value).startswith(
        "cannot init from the source: shape mismatch for features.0.weight (source (8, 3, 3, 3), "
        "model (4, 3, 3, 3))"
    )
    before = {k: v.clone() for k, v in target.state_dict().items()}
    source = randomize_scores(fcnseg.build_model("fcn32s", 5, width=0.0625)).state_dict()
    torch.save({"model": source}, tmp_path / "ok.pt")
    copied = init_from(target, tmp_path / "ok.pt")
    assert "score_fr.weight" in copied and not any(k.startswith("score_pool4") for k in copied)
    assert all(torch.equal(target.state_dict()[k], source[k]) for k in copied)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items() if k not in copied)


def test_each_stream_starts_from_its_own_net(tmp_path):
    # The reference's colour + HHA net starts from its trained colour and HHA nets.
    states = {}
    for seed, stream in enumerate(("color", "hha")):
        torch.manual_seed(seed)
        net = randomize_scores(fcnseg.build_model("fcn32s", 40, width=0.0625), std=0.1)
        torch.save({"model": net.state_dict()}, tmp_path / f"{stream}.pt")
        states[stream] = net
    model = fcnseg.build_model("fcn32s-color-hha", 40, width=0.0625)
    init_streams(model, {stream: tmp_path / f"{stream}.pt" for stream in states})
    for stream, net in states.items():
        own, theirs = getattr(model, stream).state_dict(), net.state_dict()
        assert own.keys() == theirs.keys()
        assert all(torch.equal(own[k], theirs[k]) for k in theirs), stream
    # So the fused scores are half of each net's on its own channels.
    x = torch.randn(1, 6, 20, 24)
    model.eval()
    with torch.inference_mode():
        color = states["color"].eval().score(x[:, :3])
        hha = states["hha"].eval().score(x[:, 3:])
        torch.testing.assert_close(model.score(x), 0.5 * color + 0.5 * hha)
    torch.save({"model": fcnseg.build_model("fcn32s", 21, width=0.0625).state_dict()},
               tmp_path / "voc.pt")  # fmt: skip
    with pytest.raises(WeightsError, match=r"cannot init from .*voc.pt: it predicts 21 classes"):
        init_streams(model, {"hha": tmp_path / "voc.pt"})
    with pytest.raises(ValueError, match="no stream depth; the model's: color, hha"):
        init_streams(model, {"depth": tmp_path / "color.pt"})


def test_rgbd_conv1_takes_the_rgb_mean_for_depth(vgg16_file):
    # The reference's colour + depth surgery: conv1_1's RGB filters, and their mean
    # over R, G and B for the depth channel.
    path, state = vgg16_file
    model = fcnseg.build_model("fcn32s-color-d", 40, backbone_weights=path)
    conv1 = model.state_dict()["features.0.weight"]
    rgb = state["features.0.weight"]
    assert conv1.shape == (64, 4, 3, 3)
    torch.testing.assert_close(conv1[:, :3], rgb)
    torch.testing.assert_close(conv1[:, 3], (rgb[:, 0] + rgb[:, 1] + rgb[:, 2]) / 3)
    torch.testing.assert_close(model.state_dict()["features.2.weight"], state["features.2.weight"])


def test_caffenet_has_no_torchvision_weights():
    with pytest.raises(fcnseg.UserError, match="no ImageNet weights for its caffenet"):
        fcnseg.build_model("fcn-alexnet-caffe", 21, backbone_weights="imagenet")
