"""The figures and numbers of the guide docs/fcn-in-figures.md, computed from fcnseg's code.

    python docs/make_figures.py [--out DIR]

Writes DIR/figures/*.png and DIR/fcn-in-figures.md (DIR: docs/ by default) and prints
every number the guide quotes. The guide is the template below filled in with those
numbers, so the two cannot drift (tests/docs/test_make_figures.py checks the committed
guide against a fresh run). Everything runs in float64 on the CPU in a few seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

import fcnseg  # noqa: E402
from fcnseg.data.synthetic import make_scene  # noqa: E402
from fcnseg.nets import conv_matrix  # noqa: E402
from fcnseg.nets.backbones import VGG16  # noqa: E402
from fcnseg.nets.geometry import CoordMap, layer_map  # noqa: E402
from fcnseg.nets.upsample import Upsample, bilinear_kernel, bilinear_profile  # noqa: E402
from fcnseg.nets.weights import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

DOCS = Path(__file__).resolve().parent
GUIDE = "fcn-in-figures.md"
SKIP_RESULTS = DOCS.parent / "bench" / "results"
SKIP_NETS = {"fcn32s": "FCN-32s", "fcn16s": "FCN-16s", "fcn8s": "FCN-8s",
             "fcn8s-atonce": "FCN-8s at-once"}  # fmt: skip

WIDTH = 0.0625  # channel multiplier of the VGG16 of section 1: small, the geometry is VGG16's
CLASSES = 10
WINDOW = 224  # the classifier's input size
IMAGE = 384
SHOWN_WINDOWS = ((0, 0), (2, 3), (5, 5))  # outlined in the figure
WINDOW_COLORS = ("black", "limegreen", "magenta")


@dataclass
class Section:
    """What one section of the guide quotes (formatted as quoted) and draws."""

    numbers: dict[str, str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def e(value: float) -> str:
    """A difference at the level of float64 rounding, as the guide quotes it."""
    return f"{value:.1e}"


def exact(value: float) -> str:
    """A dyadic number (an offset, a kernel value) written out in full: 5.71875, −3, 99."""
    size = abs(value)
    text = str(int(size)) if size == int(size) else repr(float(size))
    return f"−{text}" if value < 0 else text


# 1. Convolutionalization (section 3.1)


def classifier() -> VGG16:
    """A narrow VGG16 with random weights, in float64, in eval mode."""
    torch.manual_seed(0)
    net = VGG16(num_classes=CLASSES, width=WIDTH)
    # torchvision's N(0, 0.01) fully connected weights would make every score nearly 0,
    # where any difference looks small; these keep the scores of order 1.
    for m in net.classifier:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=math.sqrt(2 / m.in_features))
            nn.init.normal_(m.bias, std=0.1)
    return net.double().eval()


def scene(size: int) -> tuple[np.ndarray, torch.Tensor]:
    """A drawn scene (size, size, 3) uint8 and its normalised (1, 3, size, size) float64."""
    image, _ = make_scene(0, 0, min_size=size, max_size=size)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    x = (torch.from_numpy(image).double() / 255 - mean) / std  # (H, W, 3)
    return image, x.permute(2, 0, 1)[None]


@torch.no_grad()
def convolutionalization() -> Section:
    net = classifier()
    image, x = scene(IMAGE)
    fcn = fcnseg.convolutionalize(net)
    stride = net.feature_info[-1].stride  # pool5's: 32
    k = fcn.classifier[0].kernel_size[0]  # fc6 as a convolution: 7x7
    scores = fcn(x)[0]  # (classes, grid, grid)
    grid = scores.shape[-1]
    windows = [(i, j) for i in range(grid) for j in range(grid)]

    feats = net.features(x)  # (1, C5, 12, 12)
    blocks = torch.cat([feats[..., i : i + k, j : j + k] for i, j in windows])  # (36, C5, 7, 7)
    # The classifier's own head (avgpool, flatten, fc6-fc8) on each window's pool5 block.
    head = net.classifier(torch.flatten(net.avgpool(blocks), 1))  # (36, classes)
    crops = torch.cat(
        [x[..., stride * i : stride * i + WINDOW, stride * j : stride * j + WINDOW]
         for i, j in windows]
    )  # fmt: skip
    on_crops = net(crops)  # (36, classes): the classifier on the cut-out image windows
    feature_diff = (net.features(crops) - blocks).abs().amax(dim=(0, 1))  # (7, 7)

    def as_maps(per_window: torch.Tensor) -> torch.Tensor:  # (36, classes) -> (classes, 6, 6)
        return per_window.T.reshape(-1, grid, grid)

    head_diff = (as_maps(head) - scores).abs().max().item()
    crop_diff = (as_maps(on_crops) - scores).abs().max().item()
    centre = feature_diff[k // 2, k // 2].item()
    numbers = {
        "conv_width": str(WIDTH),
        "conv_channels": str(feats.shape[1]),
        "conv_hidden": str(fcn.classifier[0].out_channels),
        "conv_classes": str(CLASSES),
        "conv_image": str(IMAGE),
        "conv_window": str(WINDOW),
        "conv_stride": str(stride),
        "conv_fc6": str(k),
        "conv_fc6_last": str(k - 1),
        "conv_features": str(feats.shape[-1]),
        "conv_grid": str(grid),
        "conv_windows": str(len(windows)),
        "conv_score_max": f"{scores.abs().max().item():.2f}",
        "conv_head_diff": e(head_diff),
        "conv_crop_diff": f"{crop_diff:.2f}",
        "conv_centre_diff": e(centre),
        "conv_feature_diff": f"{feature_diff.max().item():.2f}",
        "conv_exact_features": str(int((feature_diff < 1e-10).sum())),
        "conv_all_features": str(feature_diff.numel()),
    }
    arrays = {
        "image": image,
        "scores": scores[0].numpy(),
        "head": as_maps(head)[0].numpy(),
        "on_crops": as_maps(on_crops)[0].numpy(),
        "feature_diff": feature_diff.numpy(),
    }
    return Section(numbers, arrays)


# 2. Convolution as a matrix C, the transposed convolution as Cᵀ (section 3.3)


def worked_example() -> Section:
    torch.manual_seed(0)
    weight = torch.arange(1, 10, dtype=torch.float64).reshape(1, 1, 3, 3)
    c = conv_matrix(weight, (4, 4))  # (4, 16)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    out = F.conv2d(x, weight)
    (grad,) = torch.autograd.grad(out, x, y)  # (1, 1, 4, 4): Cᵀ vec(y)
    ct_y = c.T @ y.flatten()
    conv_diff = (c @ x.detach().flatten() - out.detach().flatten()).abs().max().item()
    transposed_diff = (ct_y - F.conv_transpose2d(y, weight).flatten()).abs().max().item()
    grad_diff = (ct_y - grad.flatten()).abs().max().item()

    # The FCN's own 2x upsampling layer is Cᵀ of the stride-2 bilinear convolution.
    up = Upsample(1, 4, 2).double()
    small = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    big = up(small)  # (1, 1, 8, 8)
    c_up = conv_matrix(up.kernel.double(), big.shape[-2:], stride=2)  # (9, 64)
    up_diff = (c_up.T @ small.flatten() - big.flatten()).abs().max().item()
    # Row sums of Cᵀ: the weights each output pixel gets from its inputs.
    received = c_up.T.sum(dim=1).reshape(big.shape[-2:])
    middle = received[big.shape[-2] // 2]
    numbers = {
        "mat_shape": f"{c.shape[0]}x{c.shape[1]}",
        "mat_nonzero": str(int((c != 0).sum())),
        "mat_entries": str(c.numel()),
        "mat_conv_diff": e(conv_diff),
        "mat_transposed_diff": e(transposed_diff),
        "mat_grad_diff": e(grad_diff),
        "mat_up_in": f"{small.shape[-2]}x{small.shape[-1]}",
        "mat_up_out": f"{big.shape[-2]}x{big.shape[-1]}",
        "mat_up_shape": f"{c_up.shape[0]}x{c_up.shape[1]}",
        "mat_up_diff": e(up_diff),
        "mat_received": ", ".join(exact(v) for v in middle.tolist()),
    }
    return Section(numbers, {"c": c.numpy()})


# 3. The bilinear kernel (section 3.3)


def bilinear() -> Section:
    k4, k64 = bilinear_kernel(4).double(), bilinear_kernel(64).double()
    numbers = {
        "bil_profile4": ", ".join(exact(v) for v in bilinear_profile(4).tolist()),
        "bil_k4_min": exact(k4.min().item()),
        "bil_k4_max": exact(k4.max().item()),
        "bil_sum4": exact(k4.sum().item()),
        "bil_sum64": exact(k64.sum().item()),
        "bil_peak64": f"{k64.max().item():.4f}",
    }
    return Section(numbers, {"k4": k4.numpy(), "k64": k64.numpy()})


# 4. Coordinate maps and crops (section 4.2)


def vgg_names(features: nn.Sequential) -> dict[int, str]:
    """VGG16's layer names (conv1_1 ... pool5) by index into ``features``."""
    names, block, conv = {}, 1, 0
    for i, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            names[i] = f"conv{block}_{conv}"
        elif isinstance(layer, nn.MaxPool2d):
            names[i] = f"pool{block}"
            block, conv = block + 1, 0
    return names


def map_text(m: CoordMap) -> str:
    """``y/2 - 0.25``, ``2y + 1.5``, ``y + 99``: one layer's map, as the table writes it."""
    if m.scale == 1:
        term = "y"
    elif m.scale < 1:
        term = f"y/{exact(1 / m.scale)}"
    else:
        term = f"{exact(m.scale)}y"
    if m.offset == 0:
        return term
    return f"{term} {'+' if m.offset > 0 else '−'} {exact(abs(m.offset))}"


def shape_text(layer: nn.Module) -> str:
    """Kernel, stride, pad of a layer (square), ``T`` marking a transposed convolution."""
    if isinstance(layer, Upsample):
        return f"{layer.kernel_size}, {layer.stride}, 0 (T)"
    k, s, p = (v if isinstance(v, int) else v[0] for v in
               (layer.kernel_size, layer.stride, layer.padding))  # fmt: skip
    return f"{k}, {s}, {p}"


def geometry() -> Section:
    fcn8s = fcnseg.build_model("fcn8s", 21, width=WIDTH)  # geometry does not depend on width
    fcn32s = fcnseg.build_model("fcn32s", 21, width=WIDTH)
    names = vgg_names(fcn8s.features)
    path = [(names[i], m) for i, m in enumerate(fcn8s.features) if i in names]
    path += [(n, getattr(fcn8s, n)) for n in
             ("fc6", "fc7", "score_fr", "upscore2", "upscore_pool4", "upscore8")]  # fmt: skip
    maps, where = {}, CoordMap()  # where each layer's output puts image pixel y
    for name, layer in path:
        where = where.then(layer_map(layer))
        maps[name] = where
    off = {name: m.offset for name, m in maps.items()}
    # Two maps of one stride align when the larger is cropped by the difference of offsets.
    crops = {
        "score_pool4": off["pool4"] - off["upscore2"],
        "score_pool3": off["pool3"] - off["upscore_pool4"],
        "upscore8": off["upscore8"] - 0,
    }
    if crops != fcn8s.crops:  # the arithmetic here must be the model's own
        raise AssertionError(f"crops {crops} != FCN-8s's {fcn8s.crops}")
    up32 = layer_map(fcn32s.upscore)
    if fcn32s.crops["upscore"] != up32(off["score_fr"]):
        raise AssertionError("FCN-32s's crop is not its upscore's map of fc7's offset")

    def crop(tap: str, up: str) -> str:
        value = exact(off[tap] - off[up])
        return f"crop score_{tap} by {exact(off[tap])} − {exact(off[up])} = **{value}**"

    notes = {
        "pool4": "score_pool4 reads this map",
        "pool3": "score_pool3 reads this map",
        "upscore2": crop("pool4", "upscore2"),
        "upscore_pool4": crop("pool3", "upscore_pool4"),
        "upscore8": f"crop by {exact(off['upscore8'])} − 0 = **{exact(crops['upscore8'])}**, "
        "to the image",
    }
    rows: list[list[str]] = []
    for name, layer in path:
        here = layer_map(layer)
        row = [name, shape_text(layer), map_text(here), exact(off[name]),
               exact(1 / maps[name].scale), notes.get(name, "")]  # fmt: skip
        if rows and here == CoordMap() and rows[-1][2] == "y" and not rows[-1][5]:
            rows[-1][0] += f", {name}"  # a run of layers that leave coordinates alone
            rows[-1][5] = row[5]
        else:
            rows.append(row)
    table = ["| layer(s) | kernel, stride, pad | maps y to | image pixel 0 at | stride | |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    table += ["| " + " | ".join(row) + " |" for row in rows]

    numbers = {
        "geo_table": "\n".join(table),
        "geo_pool4": exact(off["pool4"]),
        "geo_pool3": exact(off["pool3"]),
        "geo_fc7": exact(off["score_fr"]),
        "geo_up2": exact(off["upscore2"]),
        "geo_up4": exact(off["upscore_pool4"]),
        "geo_crop4": exact(crops["score_pool4"]),
        "geo_crop3": exact(crops["score_pool3"]),
        "geo_crop8": exact(crops["upscore8"]),
        "geo_up32": map_text(up32),
        "geo_crop32": exact(fcn32s.crops["upscore"]),
        "geo_pad1": ", ".join(f"{n} {v}" for n, v in
                              fcnseg.build_model("fcn8s", 21, width=WIDTH, pad=1).crops.items()),
    }  # fmt: skip
    # Per map the figure draws: its offset, its stride, how many pixels are cropped off.
    shown = {"pool4": crops["score_pool4"], "upscore2": 0, "pool3": crops["score_pool3"],
             "upscore_pool4": 0, "upscore8": crops["upscore8"]}  # fmt: skip
    arrays = {n: np.array([off[n], 1 / maps[n].scale, c]) for n, c in shown.items()}
    return Section(numbers, arrays)


# 5. The skip nets compared (section 4.2, Table 2 and Figure 4): bench/skip_nets.sh's results


def skip_comparison(results: Path = SKIP_RESULTS) -> Section:
    """The comparison's figure and table when bench/results has them, else how to make them."""
    parts = []
    if (results / "skip_nets.png").exists():
        parts.append(
            "![The same validation images through FCN-32s, FCN-16s, FCN-8s and FCN-8s "
            "at-once](../bench/results/skip_nets.png)"
        )
    if (results / "skip_nets.json").exists():
        data = json.loads((results / "skip_nets.json").read_text())
        models = data.get("models", data)  # bench/skip_nets.py nests them under "models"
        nets = [n for n in SKIP_NETS if n in models]
        classes = list(models[nets[0]]["per_class_iu"])
        table = ["| % | " + " | ".join(SKIP_NETS[n] for n in nets) + " |",
                 "|---" * (len(nets) + 1) + "|"]  # fmt: skip
        rows = [("**mean IU**", lambda m: m["mean_iu"]),
                ("pixel accuracy", lambda m: m["pixel_accuracy"])]  # fmt: skip
        rows += [(f"IU {c}", lambda m, c=c: m["per_class_iu"][c]) for c in classes]
        for label, value in rows:
            table.append(
                f"| {label} | " + " | ".join(f"{100 * value(models[n]):.1f}" for n in nets) + " |"
            )
        parts.append(
            "Validation mean IU, pixel accuracy and per-class IU, in percent, from "
            "`bench/results/skip_nets.json`:\n\n" + "\n".join(table)
        )
    if not parts:
        parts.append(
            "*Not made yet.* `bash bench/skip_nets.sh` trains the four nets on CamVid and "
            "writes `bench/results/skip_nets.json` and `bench/results/skip_nets.png`; "
            "`python docs/make_figures.py` then puts its figure and table here."
        )
    return Section({"skip_section": "\n\n".join(parts)})


# Drawing


def heatmap(
    ax: plt.Axes,
    values: np.ndarray,
    *,
    fmt: str = "{:.2f}",
    cmap: str = "RdBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    fontsize: float = 8,
    blank_zero: bool = False,
) -> None:
    """``values`` (H, W) as coloured cells with their numbers written in."""
    colors = plt.get_cmap(cmap).with_extremes(bad="white")
    shown = np.ma.masked_equal(values, 0) if blank_zero else values
    image = ax.imshow(shown, cmap=colors, vmin=vmin, vmax=vmax)
    for (r, c), v in np.ndenumerate(values):
        if blank_zero and v == 0:
            continue
        red, green, blue, _ = colors(image.norm(v))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def outline(ax: plt.Axes, xy: tuple[float, float], size: float, color: str) -> None:
    """A square outline, haloed in white so it shows on dark and light ground alike."""
    halo = [matplotlib.patheffects.withStroke(linewidth=4.5, foreground="white")]
    ax.add_patch(Rectangle(xy, size, size, fill=False, ec=color, lw=2, path_effects=halo))


def save(fig: plt.Figure, path: Path) -> None:
    """``fig`` as a PNG of at most 256 colours: a fraction of the size, the same to the eye."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90)
    plt.close(fig)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)


def draw_convolutionalization(s: Section, path: Path) -> None:
    a, n = s.arrays, s.numbers
    stride, window = int(n["conv_stride"]), int(n["conv_window"])
    fig, axes = plt.subplots(1, 5, figsize=(17, 4.1))
    axes[0].imshow(a["image"])
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title(
        f"{n['conv_image']}x{n['conv_image']} image: 3 of its {n['conv_windows']}\n"
        f"{window}x{window} windows at stride {stride}"
    )
    limit = max(np.abs(a[key]).max() for key in ("scores", "head", "on_crops"))
    titles = {
        "scores": f"convolutionalized VGG16:\n{n['conv_grid']}x{n['conv_grid']} scores (class 0)",
        "head": f"its head on each window's pool5:\nmax |diff| {n['conv_head_diff']}",
        "on_crops": f"classifier on each {window}x{window} crop:\n"
        f"max |diff| {n['conv_crop_diff']} (zero padding)",
    }
    for ax, (key, title) in zip(axes[1:4], titles.items(), strict=True):
        heatmap(ax, a[key], vmin=-limit, vmax=limit)
        ax.set_title(title)
    for (i, j), color in zip(SHOWN_WINDOWS, WINDOW_COLORS, strict=True):
        outline(axes[0], (stride * j, stride * i), window, color)
        for ax in axes[1:4]:
            outline(ax, (j - 0.5, i - 0.5), 1, color)
    heatmap(axes[4], a["feature_diff"], cmap="Greys", vmin=0, fmt="{:.2f}")
    axes[4].set_title("crop's pool5 − image's pool5:\nmax |diff| per position")
    fig.tight_layout()
    save(fig, path)


def draw_worked_example(s: Section, path: Path) -> None:
    c = s.arrays["c"]
    fig = plt.figure(figsize=(12, 6.2))
    grid = fig.add_gridspec(2, 4, width_ratios=[4, 3, 2.2, 4.6], height_ratios=[1, 1])
    small = {
        "input x (4x4): flat index 4h + w": np.arange(16.0).reshape(4, 4),
        "kernel (3x3)": np.arange(1.0, 10.0).reshape(3, 3),
        "output (2x2):\nflat index 2i + j": np.arange(4.0).reshape(2, 2),
    }
    for col, (title, values) in enumerate(small.items()):
        ax = fig.add_subplot(grid[0, col])
        cmap = "Blues" if title.startswith("kernel") else "Greys"
        heatmap(ax, values, fmt="{:.0f}", cmap=cmap, vmin=0, vmax=2.2 * values.max(), fontsize=11)
        ax.set_title(title)
    for ax, values, title, (xlabel, ylabel) in (
        (fig.add_subplot(grid[1, :3]), c, "C (4x16): vec(conv2d(x)) = C vec(x)",
         ("input pixel 4h + w", "output pixel 2i + j")),
        (fig.add_subplot(grid[:, 3]), c.T, "Cᵀ (16x4): the transposed\nconvolution, 2x2 → 4x4",
         ("output pixel 2i + j", "input pixel 4h + w")),
    ):  # fmt: skip
        heatmap(ax, values, fmt="{:.0f}", cmap="Blues", vmin=0, vmax=12, fontsize=10,
                blank_zero=True)  # fmt: skip
        ax.set_xticks(range(values.shape[1]))
        ax.set_yticks(range(values.shape[0]))
        ax.set_xticks(np.arange(values.shape[1] + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(values.shape[0] + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="0.85", linewidth=0.6)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    fig.tight_layout()
    save(fig, path)


def draw_bilinear(s: Section, path: Path) -> None:
    k4, k64 = s.arrays["k4"], s.arrays["k64"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    heatmap(axes[0], k4, fmt="{:.4f}", cmap="viridis", vmin=0, vmax=1, fontsize=10)
    axes[0].set_title("bilinear_kernel(4): 2x upsampling")
    axes[1].imshow(k64, cmap="viridis", vmin=0, vmax=1)
    axes[1].set_title("bilinear_kernel(64): 32x upsampling")
    fig.colorbar(axes[1].images[0], ax=axes[1], fraction=0.046)
    tent = np.linspace(-1, 1, 201)
    axes[2].plot(tent, 1 - np.abs(tent), "--", color="0.6", label="1 − |d|")
    for size, marker in ((64, "."), (4, "o")):
        profile = bilinear_profile(size).numpy()
        stride = (size + 1) // 2
        d = (np.arange(size) - (size - 1) / 2) / stride  # distance in input pixels
        axes[2].plot(d, profile, marker, label=f"kernel {size}, stride {stride}")
    axes[2].set_xlabel("distance d from the input pixel, in input pixels")
    axes[2].set_ylabel("weight")
    axes[2].set_title("a central row of each kernel")
    axes[2].legend()
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)


def draw_geometry(s: Section, path: Path, span: tuple[float, float] = (-100, 40)) -> None:
    rows = {
        "score_pool4 (pool4)": ("pool4", "tab:blue"),
        "upscore2": ("upscore2", "tab:orange"),
        "score_pool3 (pool3)": ("pool3", "tab:blue"),
        "upscore_pool4": ("upscore_pool4", "tab:orange"),
        "upscore8": ("upscore8", "tab:orange"),
        "image": (None, "black"),
    }
    fig, ax = plt.subplots(figsize=(12, 4.2))
    for r, (label, (key, color)) in enumerate(rows.items()):
        offset, stride, crop = s.arrays[key] if key else (0.0, 1.0, 0.0)
        y = len(rows) - 1 - r
        # Pixel m of a map sits over image coordinate stride * (m - offset).
        m = np.arange(0, math.floor(span[1] / stride + offset) + 1)
        x = stride * (m - offset)
        cut = m < crop
        ax.scatter(x[cut], np.full(cut.sum(), y), s=22, facecolors="none", edgecolors="0.55")
        ax.scatter(x[~cut], np.full((~cut).sum(), y), s=22, color=color)
        ax.text(span[0] - 3, y, f"{label}\nstride {exact(stride)}", ha="right", va="center")
        if crop:
            ax.annotate(f"crop {exact(crop)}: pixel {exact(crop)} is the first kept",
                        (x[~cut][0], y), (x[~cut][0] + 4, y + 0.35), fontsize=9)  # fmt: skip
            ax.plot([x[~cut][0]] * 2, [y, y - 1], ":", color="0.3")  # aligned with the next row
    ax.set_xlim(span[0] - 2, span[1] + 2)
    ax.set_ylim(-0.6, len(rows) - 0.3)
    ax.set_yticks([])
    ax.set_xlabel("image coordinate (pixels); hollow: cropped away")
    ax.set_title("FCN-8s (pad 100): where each map's pixels sit over the image")
    ax.grid(axis="x", alpha=0.3)
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    fig.tight_layout()
    save(fig, path)


# The guide

FIGURES = {
    "convolutionalization.png": ("conv", draw_convolutionalization),
    "conv-matrix.png": ("matrix", draw_worked_example),
    "bilinear.png": ("bilinear", draw_bilinear),
    "crops.png": ("geometry", draw_geometry),
}

TEMPLATE = """\
<!-- Generated by `python docs/make_figures.py` from fcnseg's own code: edit the script. -->
# FCN in figures

The paper's ideas, drawn from this package's code. Every figure and every number
on this page is made by `python docs/make_figures.py`, which prints the numbers
and writes this page from them (`tests/docs/test_make_figures.py` checks that the
page and a fresh run agree).

## 1. Convolutionalization (section 3.1)

![A 384x384 image, three of its windows, and the 6x6 score maps](figures/convolutionalization.png)

A VGG16 classifier with random weights (width {conv_width}: {conv_channels} channels at
pool5, {conv_hidden} in fc6 and fc7, {conv_classes} classes; float64) reads a
{conv_window}x{conv_window} image. `fcnseg.convolutionalize` turns its fc6 into a
{conv_fc6}x{conv_fc6} convolution and fc7, fc8 into 1x1 ones, the same weights
reshaped. On a {conv_image}x{conv_image} image the converted net gives a
{conv_grid}x{conv_grid} map of scores, one per {conv_window}x{conv_window} window at
stride {conv_stride}: pool5 is {conv_features}x{conv_features}, and a
{conv_fc6}x{conv_fc6} kernel fits {conv_grid} times along each side.

**Largest difference between the score map and the classifier's head run on each
window's {conv_fc6}x{conv_fc6} block of pool5 features, over all {conv_classes}
classes: {conv_head_diff}** (the scores reach {conv_score_max}). Number for number
the same, up to float64 rounding.

Why the equality is exact at the feature level: fc6 as a convolution, at output
(i, j), multiplies its weights with pool5's block at rows i to i + {conv_fc6_last}
and columns j to j + {conv_fc6_last}, in the (channel, row, column) order `torch.flatten`
uses — exactly the vector the fully connected fc6 reads for that window. fc7 and
fc8, as 1x1 convolutions, apply the classifier's matrices to each position's
vector. Only the order of the sums differs. Block (i, j) belongs to the window at
pixel ({conv_stride}i, {conv_stride}j) because every layer up to pool5 is
translation equivariant with a total stride of {conv_stride}, and {conv_window} is
{conv_fc6} x {conv_stride}: shifting the image by {conv_stride} pixels shifts pool5 by one.

What is *not* exact is the classifier run on the cut-out {conv_window}x{conv_window}
crop: largest difference **{conv_crop_diff}**. VGG16's 3x3 convolutions pad with
zeros, so a crop's border sees zeros where the whole image has pixels, and each
convolution carries the change one pixel further in. Of a crop's
{conv_all_features} pool5 features only {conv_exact_features} (the centre) equals
the whole image's (difference {conv_centre_diff}); the others differ by up
to {conv_feature_diff} (right panel). The convolutionalized net is the classifier
seeing each window *in its context*; for a net without padding it is the
classifier on the crop too (`tests/nets/test_convolutionalize.py` checks that case).

## 2. Convolution as a matrix, deconvolution as its transpose (section 3.3)

![C and its transpose for a 4x4 input and a 3x3 kernel](figures/conv-matrix.png)

A convolution is linear in its input: `vec(conv2d(x)) = C vec(x)`, with `vec`
flattening (channel, row, column). `fcnseg.nets.conv_matrix(weight, (H, W),
stride=..., padding=...)` builds C. The worked example: a 4x4 input, a 3x3 kernel
(values 1 to 9), no padding, stride 1 give a 2x2 output and a {mat_shape} C. Each
row is one output pixel and holds the 9 kernel values at its window's input
positions, zeros elsewhere ({mat_nonzero} of {mat_entries} entries are not zero).

Cᵀ goes the other way, from the 2x2 map to a 4x4 one: each input pixel gets the
kernel values of every window it is in. That is the transposed convolution (the
paper's "deconvolution"), and it is also the gradient of the convolution with
respect to its input. Largest differences, float64:

| | largest difference |
|---|---|
| `C vec(x)` vs `conv2d(x)` | {mat_conv_diff} |
| `Cᵀ vec(y)` vs `conv_transpose2d(y)` | {mat_transposed_diff} |
| `Cᵀ vec(y)` vs autograd's gradient of `conv2d(x)` with respect to x | {mat_grad_diff} |
| `Upsample(1, 4, 2)`, {mat_up_in} → {mat_up_out}, vs Cᵀ (C: {mat_up_shape}) | {mat_up_diff} |

The last row is the FCN's own 2x upsampling layer against the transpose of the
stride-2 convolution with its bilinear kernel. The row sums of that Cᵀ are the
weights each output pixel receives; along the middle row they are
{mat_received}: 1 between two input pixels, less at the border, where an output
pixel has only one input pixel near it.

## 3. The bilinear kernel (section 3.3)

![The 4x4 and 64x64 bilinear kernels and their profiles](figures/bilinear.png)

The upsampling layers start as (and by default stay) bilinear interpolation:
`bilinear_kernel(k)` is the outer product of a tent, 1 at the centre falling
linearly to 0 one stride away. For 2x (kernel 4, stride 2) the tent is
{bil_profile4}, so the 4x4 kernel runs from {bil_k4_min} to {bil_k4_max}. The
64x64 kernel of FCN-32s's 32x upsampling peaks at {bil_peak64}. The kernel for
stride s sums to s² ({bil_sum4} for kernel 4, {bil_sum64} for kernel 64): each input
pixel is spread over s x s output pixels, and every output pixel between input
pixels gets weights summing to 1 (section 2), so the layer interpolates and does
not scale.

## 4. Coordinate maps and crops: where 5, 9 and 31 come from (section 4.2)

![Where each map's pixels sit over the image in FCN-8s](figures/crops.png)

Every layer maps a coordinate y of its input to one of its output: a
convolution or pooling of kernel k, stride s, pad p to (y + p − (k − 1)/2) / s,
a transposed convolution to s·y + (k − 1)/2 − p (`fcnseg.nets.geometry`).
Composing them from the image gives, for each map, where image pixel 0 lands.
Two maps of the same stride line up when the one in which image pixel 0 sits at
the larger position is cropped by the difference. For FCN-8s with the reference's pad of 100 (the
table is printed by the script from the model's layers; ReLU and dropout leave
coordinates alone):

{geo_table}

So score_pool4 is cropped by {geo_crop4} ({geo_pool4} − {geo_up2}) before it is
added to upscore2, score_pool3 by {geo_crop3} ({geo_pool3} − {geo_up4}), and the
final 8x upsampling by {geo_crop8}. FCN-32s upsamples fc7's scores (pixel 0 at
{geo_fc7}) 32x at once, y → {geo_up32}, hence its crop of {geo_crop32}. The pad of
100 is there so that fc6, unpadded, still covers small images; with fcnseg's
`pad=1` (fc6 padded instead) the same arithmetic crops the upsampled maps
instead: {geo_pad1}.

## 5. The skips compared (section 4.2, Table 2 and Figure 4)

FCN-32s, then FCN-16s initialised from it, then FCN-8s from that (staged, as in
section 4.2), and FCN-8s trained at once, on CamVid, as `bench/skip_nets.sh`
trains them (the README gives the command and its wall time).

{skip_section}
"""


def guide(numbers: dict[str, str]) -> str:
    """The guide's markdown, ``numbers`` filled in."""
    return TEMPLATE.format(**numbers)


def compute() -> dict[str, Section]:
    """Every section's numbers and arrays (no drawing)."""
    return {
        "conv": convolutionalization(),
        "matrix": worked_example(),
        "bilinear": bilinear(),
        "geometry": geometry(),
        "skip": skip_comparison(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS,
                        help=f"folder for {GUIDE} and figures/ (default: docs/)")  # fmt: skip
    args = parser.parse_args(argv)
    sections = compute()
    numbers = {k: v for s in sections.values() for k, v in s.numbers.items()}
    for key, value in numbers.items():
        print(f"{key}:\n{value}" if "\n" in value else f"{key}: {value}")
    figures = args.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for name, (section, draw) in FIGURES.items():
        draw(sections[section], figures / name)
    (args.out / GUIDE).write_text(guide(numbers))
    print(f"wrote {args.out / GUIDE} and {len(FIGURES)} figures in {figures}")


if __name__ == "__main__":
    main()
