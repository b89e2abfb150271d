import pathlib

import pytest
import torch

CAMVID = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "camvid"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_scores(model: torch.nn.Module, std: float = 0.01) -> torch.nn.Module:
    """Give every score layer random weights: they start at zero, which hides bugs."""
    for name, module in model.named_modules():
        if name.startswith("score_"):
            torch.nn.init.normal_(module.weight, std=std)
            torch.nn.init.normal_(module.bias, std=std)
    return model
