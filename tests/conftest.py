import pathlib

import numpy as np
import pytest
import torch

CAMVID = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "camvid"
EMULATED_BF16_LINE = (
    "warning: --precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so it is "
    "emulated and runs many times slower than fp32; --precision auto picks fp32 here"
)
"""What the command line prints when bf16 is asked for on a CPU that emulates it."""


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The data-check cache of every test (and of the commands they start) in a temp folder.
    Tests run torch unless they name a --backend: the engines' own tests do, and the
    others compare with torch's outputs (and need no ONNX export per checkpoint)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("FCNSEG_BACKEND", "torch")
        yield


@pytest.fixture
def cpu_with(tmp_path, monkeypatch):
    """``cpu_with(flags)`` makes fcnseg read a /proc/cpuinfo whose CPU has ``flags``."""
    from fcnseg.train import device

    def fake(flags: str) -> None:
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        monkeypatch.setattr(device, "CPUINFO", tmp_path / "cpuinfo")

    return fake


def randomize_scores(model: torch.nn.Module, std: float = 0.01) -> torch.nn.Module:
    """Give every score layer random weights: they start at zero, which hides bugs."""
    for name, module in model.named_modules():
        if name.rpartition(".")[2].startswith("score_"):  # a stream's too: hha.score_fr
            torch.nn.init.normal_(module.weight, std=std)
            torch.nn.init.normal_(module.bias, std=std)
    return model


def save_tiny_checkpoint(path: pathlib.Path, iteration: int = 3) -> pathlib.Path:
    """A tiny FCN-8s (the synthetic classes) with random score layers, so that its labels
    vary from pixel to pixel, saved at ``path`` as ``fcnseg train`` saves checkpoints."""
    import dataclasses

    import fcnseg
    from fcnseg.data.synthetic import SyntheticDataset
    from fcnseg.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = randomize_scores(fcnseg.build_model("fcn8s", 5, width=0.0625), std=0.1)
    save_checkpoint({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                     "dataset": dataclasses.asdict(SyntheticDataset.info),
                     "normalization": "imagenet", "iteration": iteration}, path)  # fmt: skip
    return path


def save_balanced_checkpoints(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The tiny checkpoint saved twice, as trained with ``imagenet-greyworld`` and with
    ``imagenet-greyworld-clip``: (balanced, clipped) paths in ``folder``."""
    from fcnseg.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(save_tiny_checkpoint(folder / "tiny.pt"))
    paths = folder / "gw.pt", folder / "clip.pt"
    for path, mode in zip(paths, ("imagenet-greyworld", "imagenet-greyworld-clip"), strict=True):
        save_checkpoint({**ckpt, "normalization": mode}, path)
    return paths


def dusk_with_bright_sky() -> np.ndarray:
    """A (40, 52, 3) uint8 frame, dark but for a bright band: the grey-world balance scales
    the band past 255, where ``imagenet-greyworld-clip`` clips it."""
    image = np.random.default_rng(0).integers(0, 40, (40, 52, 3), dtype=np.uint8)
    image[:12] = 250
    return image


def one_line_error(capsys) -> str:
    """The command's stderr, checked to be one ``fcnseg: error:`` line after any progress
    bar (which redraws its line with carriage returns)."""
    err = capsys.readouterr().err.split("\r")[-1].strip()
    assert err.startswith("fcnseg: error: ") and "\n" not in err, err
    return err
