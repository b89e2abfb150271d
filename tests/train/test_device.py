import warnings

import pytest
import torch

from fcnseg.errors import ConfigError
from fcnseg.train import device
from fcnseg.train.device import (
    EmulatedBf16Warning,
    resolve_precision,
    select_device,
    warn_emulated_bf16,
)
from tests.conftest import EMULATED_BF16_LINE

CPU = torch.device("cpu")
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse sse2 avx2 avx512f {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu sse sse2 avx2 avx512f {extra}
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [("", torch.float32), ("avx512_bf16", torch.bfloat16), ("amx_tile amx_bf16", torch.bfloat16),
     ("avx512_fp16", torch.float32)],
)  # fmt: skip
def test_auto_precision_follows_the_cpu_flags(tmp_path, monkeypatch, extra, expected):
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(extra=extra))
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "cpuinfo")
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == torch.float32  # explicit choices ignore the flags
    assert resolve_precision("bf16", CPU) == torch.bfloat16


def test_auto_precision_without_cpuinfo_is_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "missing")
    assert resolve_precision("auto", CPU) == torch.float32


def test_bad_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="--precision fp16: .*GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="--precision fp8: unknown; choose one of auto, fp32"):
        resolve_precision("fp8", CPU)


def _gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_missing_gpu_is_one_line_naming_what_exists(monkeypatch):
    _gpus(monkeypatch, 0)
    assert select_device("auto") == CPU and select_device("cpu") == CPU
    with pytest.raises(ConfigError) as err:
        select_device("cuda")
    assert str(err.value) == "--device cuda: not available on this machine, which has cpu"
    with pytest.raises(ConfigError, match="--device mps: not available"):
        select_device("mps")


def test_gpu_index_checked_against_the_count(monkeypatch):
    _gpus(monkeypatch, 2)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="--device cuda:2: .* has cpu, cuda:0, cuda:1$"):
        select_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "meta", ""])
def test_unknown_device_names(monkeypatch, name):
    _gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match=f"--device {name}: unknown device; choose auto, cpu"):
        select_device(name)


@pytest.mark.parametrize(
    ("extra", "dtype", "dev", "warns"),
    [("", torch.bfloat16, CPU, True), ("avx512_bf16", torch.bfloat16, CPU, False),
     ("", torch.float32, CPU, False), ("", torch.bfloat16, torch.device("cuda"), False)],
)  # fmt: skip
def test_emulated_bf16_is_warned_of(tmp_path, monkeypatch, extra, dtype, dev, warns):
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(extra=extra))
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "cpuinfo")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_emulated_bf16(dtype, dev) == warns
    assert [w.category for w in caught] == [EmulatedBf16Warning] * warns
    assert [str(w.message) for w in caught] == [
        EMULATED_BF16_LINE.removeprefix("warning: ")
    ] * warns
