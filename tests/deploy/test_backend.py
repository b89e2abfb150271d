"""``--backend auto``: the engine and precision follow the table of
:mod:`fcnseg.deploy.backend`, for faked CPU flags and installed engines."""

import re

import pytest
import torch

from fcnseg.cli import main
from fcnseg.deploy import inference
from fcnseg.deploy.backend import choose_backend, default_backend
from fcnseg.deploy.engines import OnnxModel, OpenVinoModel
from fcnseg.deploy.inference import Segmenter
from fcnseg.errors import ConfigError
from fcnseg.train import device
from tests.conftest import save_tiny_checkpoint

CPU = torch.device("cpu")
FLAGS = {
    "avx2": frozenset({"sse2", "avx", "avx2", "fma"}),
    "avx512f": frozenset({"sse2", "avx2", "avx512f", "avx512_vnni"}),
    "avx512_bf16": frozenset({"sse2", "avx2", "avx512f", "avx512_bf16"}),
    "amx_bf16": frozenset({"sse2", "avx2", "amx_tile", "amx_int8", "amx_bf16"}),
}
"""CPU kinds, by the flag that sets them apart."""
NATIVE_BF16 = {"avx2": False, "avx512f": False, "avx512_bf16": True, "amx_bf16": True}
BOTH = ("onnxruntime", "openvino")
CPUINFO = "".join(f"processor\t: {i}\nflags\t\t: fpu sse2 avx2 {{extra}}\n\n" for i in range(2))
"""/proc/cpuinfo of a 2-core x86-64 CPU with AVX2 and the ``extra`` flags."""
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
INSTALLED = [(), ("onnxruntime",), ("openvino",), BOTH]
# The module's table, written out per installed set: the engine auto takes in each row.
FP32_ROW = {(): "torch", ("onnxruntime",): "onnxruntime", ("openvino",): "openvino",
            BOTH: "onnxruntime"}  # fmt: skip
BF16_ROW = {(): "torch", ("onnxruntime",): "torch", ("openvino",): "openvino", BOTH: "openvino"}
# Neither installed: openvino, whose constructor then names the package to install.
INT8_ROW = {(): "openvino", ("onnxruntime",): "onnxruntime", ("openvino",): "openvino",
            BOTH: "openvino"}  # fmt: skip


def choose(backend="auto", precision="auto", *, cpu="avx2", installed=BOTH, **kwargs):
    return choose_backend(backend, precision, device=kwargs.pop("device", CPU),
                          flags=FLAGS[cpu], installed=installed, **kwargs)  # fmt: skip


def refused(match: str, *args, **kwargs) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        choose(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.mark.parametrize("cpu", FLAGS)
@pytest.mark.parametrize("installed", INSTALLED)
def test_auto_follows_the_table(cpu, installed):
    native = NATIVE_BF16[cpu]
    auto = choose(cpu=cpu, installed=installed)
    row = BF16_ROW if native else FP32_ROW
    assert (auto.backend, auto.precision) == (row[installed], "bf16" if native else "fp32")
    assert auto.reason.startswith("auto: ") and auto.backend in str(auto)
    # --precision fp32 takes the fp32 row on any CPU, --precision bf16 the bf16 row where the
    # CPU has bf16, else torch's emulation (OpenVINO would quietly compute fp32).
    fp32 = choose(precision="fp32", cpu=cpu, installed=installed)
    assert (fp32.backend, fp32.precision) == (FP32_ROW[installed], "fp32")
    bf16 = choose(precision="bf16", cpu=cpu, installed=installed)
    assert (bf16.backend, bf16.precision) == (BF16_ROW[installed] if native else "torch", "bf16")
    int8 = choose(cpu=cpu, installed=installed, int8=True)
    assert (int8.backend, int8.precision) == (INT8_ROW[installed], "int8")


@pytest.mark.parametrize("cpu", FLAGS)
@pytest.mark.parametrize("installed", INSTALLED)
def test_what_the_engines_cannot_run_is_left_to_torch(cpu, installed):
    gpu = torch.device("cuda")  # constructed only: nothing runs on it
    for kwargs, why in [({"device": gpu}, "a GPU"), ({"exportable": False}, "not exportable"),
                        ({"compile": True}, "--compile")]:  # fmt: skip
        for precision in ("auto", "fp32", "bf16"):
            choice = choose(precision=precision, cpu=cpu, installed=installed, **kwargs)
            # torch resolves the precision itself (Segmenter, resolve_precision).
            assert (choice.backend, choice.precision) == ("torch", precision)
            assert why in choice.reason
    assert choose(precision="fp16", device=gpu, cpu=cpu, installed=installed).precision == "fp16"


@pytest.mark.parametrize("cpu", FLAGS)
def test_an_engine_asked_for_runs_in_its_precision(cpu):
    native = NATIVE_BF16[cpu]
    for installed in INSTALLED:  # asked: taken, installed or not (its constructor says)
        assert choose("onnxruntime", cpu=cpu, installed=installed).precision == "fp32"
        assert choose("openvino", cpu=cpu, installed=installed).backend == "openvino"
    assert choose("onnxruntime", "fp32", cpu=cpu).precision == "fp32"
    assert choose("openvino", cpu=cpu).precision == ("bf16" if native else "fp32")
    assert choose("openvino", "fp32", cpu=cpu).precision == "fp32"
    if native:
        assert choose("openvino", "bf16", cpu=cpu).precision == "bf16"
    else:  # OpenVINO would quietly run fp32: refused
        refused("^--precision bf16: this CPU has no AMX or AVX512-BF16", "openvino", "bf16",
                cpu=cpu)  # fmt: skip
    for precision in ("auto", "fp32", "bf16", "fp16"):
        torch_choice = choose("torch", precision, cpu=cpu)
        assert (torch_choice.backend, torch_choice.precision) == ("torch", precision)
    for engine in ("onnxruntime", "openvino", "auto"):
        int8 = choose(engine, cpu=cpu, int8=True)
        assert int8.precision == "int8" and int8.backend == INT8_ROW[BOTH if engine == "auto"
                                                                     else (engine,)]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [(("tensorrt",), {}, "^--backend tensorrt: unknown; choose one of auto, torch, onnxruntime"),
     (("auto", "fp16"), {}, "^--precision fp16: on a CPU"),
     (("auto", "int4"), {}, "^--precision int4: "),
     (("onnxruntime", "bf16"), {}, "^--precision bf16: the onnxruntime backend runs in fp32"),
     (("onnxruntime", "fp16"), {}, "^--precision fp16: the onnxruntime backend"),
     (("openvino", "fp16"), {}, "^--precision fp16: OpenVINO on a CPU runs fp32 or bf16"),
     (("onnxruntime",), {"device": torch.device("cuda")}, "^--backend onnxruntime runs on the CPU"),
     (("openvino",), {"device": torch.device("cuda:1")}, "^--backend openvino .*--device cpu"),
     (("openvino",), {"exportable": False}, "^--backend openvino: this net is not exported"),
     (("onnxruntime",), {"exportable": False}, "^--backend onnxruntime: .*--backend torch"),
     (("openvino",), {"compile": True}, "^--compile is torch's"),
     (("onnxruntime",), {"compile": True}, "^--compile is torch's"),
     (("torch",), {"int8": True}, "^--backend torch: an int8 model file runs on onnxruntime"),
     (("auto", "fp32"), {"int8": True}, "^--precision fp32: an int8 model file runs in int8"),
     (("openvino",), {"int8": True, "device": torch.device("cuda")}, "^--device: an int8 "),
     (("auto",), {"int8": True, "compile": True}, "^--compile is torch's: an int8 model")],
)  # fmt: skip
@pytest.mark.parametrize("cpu", FLAGS)
def test_refused_combinations_are_one_line_naming_the_flag(args, kwargs, match, cpu):
    refused(match, *args, cpu=cpu, **kwargs)


def test_default_backend_reads_the_environment(monkeypatch):
    monkeypatch.delenv("FCNSEG_BACKEND", raising=False)
    assert default_backend() == "auto"
    for name in ("auto", "torch", "onnxruntime", "openvino"):
        monkeypatch.setenv("FCNSEG_BACKEND", name)
        assert default_backend() == name
    for bad in ("tensorrt", "OpenVINO", ""):
        monkeypatch.setenv("FCNSEG_BACKEND", bad)
        with pytest.raises(ConfigError, match=r"^\$FCNSEG_BACKEND=.*: choose one of auto, ") as e:
            default_backend()
        assert repr(bad) in str(e.value) and "\n" not in str(e.value)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny FCN-8s saved as ``fcnseg train`` saves it, with random score layers."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("backend") / "tiny.pt", 3)


def smooth_image(height: int, width: int) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: large blobs, which the random net labels with several classes."""
    coarse = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(height))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")


def fake_cpu(monkeypatch, tmp_path, extra: str) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(extra=extra))
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "cpuinfo")


@pytest.mark.parametrize(
    ("extra", "installed", "backend", "precision", "engine"),
    [("avx512f avx512_bf16", BOTH, "openvino", "bf16", OpenVinoModel),
     ("amx_tile amx_bf16", BOTH, "openvino", "bf16", OpenVinoModel),
     ("avx512f avx512_vnni", BOTH, "onnxruntime", "fp32", OnnxModel),
     ("", BOTH, "onnxruntime", "fp32", OnnxModel),
     ("", ("openvino",), "openvino", "fp32", OpenVinoModel),
     ("avx512f", ("onnxruntime",), "onnxruntime", "fp32", OnnxModel),
     ("avx512_bf16", ("onnxruntime",), "torch", "bf16", None),
     ("avx512f", (), "torch", "fp32", None)],
)  # fmt: skip
def test_segmenter_picks_per_cpu_flags(checkpoint, tmp_path, monkeypatch, extra, installed,
                                       backend, precision, engine):  # fmt: skip
    if backend != "torch":
        pytest.importorskip(backend)
        pytest.importorskip("onnxscript")
    fake_cpu(monkeypatch, tmp_path, extra)
    monkeypatch.setattr(inference, "installed_engines", lambda: installed)
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    assert (seg.backend.backend, seg.precision) == (backend, precision)
    if engine is None:
        assert {p.dtype for p in seg.model.parameters()} == {DTYPES[precision]}
        return
    assert type(seg.model) is engine and seg.model.precision == precision
    if engine is OpenVinoModel:
        hint = seg.model.config["INFERENCE_PRECISION_HINT"]
        assert hint == {"fp32": "f32", "bf16": "bf16"}[precision]
    # The engine runs the checkpoint's export, made next to it, for this checkpoint.
    assert checkpoint.with_suffix(".onnx").is_file()
    if precision == "fp32":  # labels of torch's fp32 model
        image = (smooth_image(37, 45)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
        reference = Segmenter.from_checkpoint(checkpoint, backend="torch", precision="fp32")
        expected = reference.predict(image)[0]
        assert len(set(expected.flat)) > 1
        assert (seg.predict(image)[0] == expected).mean() >= 0.99


def test_an_fp32_export_runs_alone_in_the_precision_asked(checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    fake_cpu(monkeypatch, tmp_path, "avx512f avx512_bf16")
    exported = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), str(exported)]) == 0
    x = smooth_image(37, 45)
    reference = Segmenter.from_checkpoint(checkpoint, backend="torch", precision="fp32")
    for backend, precision, expected in [("auto", "auto", "bf16"), ("auto", "fp32", "fp32"),
                                         ("openvino", "fp32", "fp32"),
                                         ("onnxruntime", "auto", "fp32")]:  # fmt: skip
        seg = Segmenter.from_checkpoint(exported, backend=backend, precision=precision)
        assert (seg.backend.precision, seg.precision, seg.model.precision) == (expected,) * 3
        assert seg.checkpoint["model_config"] == reference.checkpoint["model_config"]
        if expected == "fp32":
            torch.testing.assert_close(seg.logits(x), reference.logits(x), rtol=0, atol=1e-4)
    for kwargs in ({"backend": "torch"}, {"device": "cpu", "compile": True}):
        with pytest.raises(ConfigError, match=f"^--backend .*: {re.escape(str(exported))} is "
                           "an ONNX file, run by onnxruntime or openvino") as info:  # fmt: skip
            Segmenter.from_checkpoint(exported, **kwargs)
        assert "\n" not in str(info.value)
