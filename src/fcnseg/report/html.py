"""The report page: one HTML file with its figures inside (``data:`` URLs) and no
script, font or style from elsewhere, so it opens offline and travels as one file.

It replaces only what it wrote: an existing file is overwritten when it is an
earlier report (it carries :data:`MARKER` in its head) or when asked.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from pathlib import Path

from fcnseg.atomic import atomic_write
from fcnseg.errors import ConfigError
from fcnseg.report import plots
from fcnseg.report.collect import Evaluation, Example, RunLog, evaluate_run, open_run, read_log

MARKER = '<meta name="generator" content="fcnseg report">'
"""In the head of every report: what marks a file as one to replace."""
REPORT_NAME = "report.html"
_HEAD_BYTES = 1024  # the marker's line is within the first few hundred bytes
MIN_EXAMPLE_WIDTH = 500
"""Pixels: an example narrower than this is shown enlarged (two fit side by side)."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 1.5em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; font-family: ui-monospace, monospace; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #000;
          margin-right: 0.4em; vertical-align: -0.1em; }
.warning { color: #a40; font-weight: bold; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.plot { display: block; max-width: 100%; margin: 0.5em 0; }
.examples { display: flex; flex-wrap: wrap; gap: 1em; }
figure.example { margin: 0; max-width: 100%; }
figure.example img { max-width: 100%; image-rendering: pixelated; }
figcaption { font-size: 0.9em; color: #444; }
.key span.entry { margin-right: 1.2em; white-space: nowrap; }
"""


def report_path(run_dir: str | Path, output: str | Path | None) -> Path:
    """Where the report goes: ``output``, or else ``<run_dir>/report.html``."""
    return Path(output) if output is not None else Path(run_dir) / REPORT_NAME


def check_report_path(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that must not be replaced.

    Raises:
        ConfigError: ``path`` is a folder, or a file other than an earlier report
            (unless ``overwrite``).
    """
    if path.is_dir():
        raise ConfigError(f"-o {path}: is a folder; give the .html file to write")
    if path.exists() and not overwrite and not is_report(path):
        raise ConfigError(
            f"-o {path}: exists and is not an fcnseg report, so it is kept; give another "
            "-o, or --overwrite to replace it"
        )


def is_report(path: Path) -> bool:
    """Whether ``path`` starts as a report does (:data:`MARKER` in its first bytes)."""
    try:
        with open(path, "rb") as f:
            return MARKER.encode() in f.read(_HEAD_BYTES)
    except OSError:
        return False


def make_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    overwrite: bool = False,
    device: str = "auto",
    batch_size: int = 4,
    examples: int = 3,
    progress: bool = True,
) -> Path:
    """Evaluate the run's ``best.pt`` and write its report; returns the report's path.

    Raises:
        RunError: ``run_dir`` is missing, empty or has no checkpoint yet.
        ConfigError: the output may not be replaced (:func:`check_report_path`).
        DataError: the run's validation data cannot be read.
    """
    run = open_run(run_dir)
    path = report_path(run_dir, output)
    check_report_path(path, overwrite)
    config = json.loads((run.path / "config.json").read_text())
    log = read_log(run.log_path)
    evaluation = evaluate_run(run, device=device, batch_size=batch_size, examples=examples,
                              progress=progress)  # fmt: skip
    page = render(str(run.path), config, log, evaluation)
    atomic_write(path, lambda f: f.write(page.encode()))
    return path


def render(title: str, config: dict, log: RunLog, evaluation: Evaluation) -> str:
    """The whole page as text: a summary, then the eval tables with the per-class IU
    bars, the training and validation curves, the confusion matrix, the best and
    worst images, and the config; ``title`` names the run (its folder)."""
    sections = [
        ("metrics", "Evaluation of best.pt", _evaluation_section(evaluation)),
        ("training", "Training", _training_section(log)),
        ("confusion", "Confusion matrix", _img(plots.confusion_heatmap(
            evaluation.confusion, evaluation.info.classes), "row-normalised confusion matrix")),
        ("examples", "Best and worst validation images", _examples_section(evaluation)),
        ("config", "Run config (config.json)", _config_tables(config)),
    ]  # fmt: skip
    nav = " ".join(f'<a href="#{key}">{_e(heading)}</a>' for key, heading, _ in sections)
    body = "\n".join(
        f'<section id="{key}">\n<h2>{_e(heading)}</h2>\n{content}\n</section>'
        for key, heading, content in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fcnseg report: {_e(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>fcnseg report: {_e(title)}</h1>
<p class="summary">{_summary(config, evaluation)}</p>
<nav>{nav}</nav>
{body}
</body>
</html>
"""


def _summary(config: dict, evaluation: Evaluation) -> str:
    images = len(evaluation.scores)
    return _e(
        f"{config.get('model')} (width {config.get('width')}) trained on "
        f"{config.get('dataset')}/{config.get('train_split')} for {config.get('iterations')} "
        f"iterations; best.pt from iteration {evaluation.iteration}, evaluated on "
        f"{evaluation.split} ({images} images): mean IU "
        f"{_pct(evaluation.metrics['mean_iu'])}, pixel accuracy "
        f"{_pct(evaluation.metrics['pixel_acc'])}."
    )


def _evaluation_section(evaluation: Evaluation) -> str:
    m = evaluation.metrics
    rows = [("pixel_acc", "pixel accuracy"), ("mean_acc", "mean accuracy"),
            ("mean_iu", "mean IU"), ("fw_iu", "frequency weighted IU")]  # fmt: skip
    four = "".join(
        f'<tr><td>{name}</td><td data-metric="{key}">{_pct(m[key])}</td></tr>' for key, name in rows
    )
    per_class = "".join(
        f'<tr data-class="{i}"><td>{_swatch(color)}{_e(name)}</td>'
        f'<td data-metric="iu">{_pct(iu)}</td><td data-metric="acc">{_pct(acc)}</td></tr>'
        for i, (name, color, iu, acc) in enumerate(zip(
            evaluation.info.classes, evaluation.info.colors, m["per_class_iu"],
            m["per_class_acc"], strict=True))
    )  # fmt: skip
    warning = f'<p class="warning">warning: {_e(m["warning"])}</p>' if "warning" in m else ""
    bars = plots.class_iu_bars(m["per_class_iu"], evaluation.info.classes, evaluation.info.colors)
    return (
        f"<p>Percent, void pixels left out (paper section 5), as <code>fcnseg eval</code> "
        f'computes them on {_e(evaluation.split)}.</p>{warning}<div class="row">'
        f'<table class="metrics"><tr><th>metric</th><th>%</th></tr>{four}</table>'
        f'<table class="per-class"><tr><th>class</th><th>IU %</th><th>acc %</th></tr>'
        f"{per_class}</table>{_img(bars, 'per-class IU bars')}</div>"
    )


def _training_section(log: RunLog) -> str:
    parts = []
    if log.losses:
        parts.append(_img(plots.loss_and_lr(log.losses), "training loss and learning rate"))
    else:
        parts.append("<p>No loss records in metrics.jsonl.</p>")
    parts.append(_img(plots.validation_curves(log.evals), "validation mean IU and pixel accuracy"))
    return f'<div class="row">{"".join(parts)}</div>'


def _examples_section(evaluation: Evaluation) -> str:
    info = evaluation.info
    key = "".join(
        f'<span class="entry">{_swatch(color)}{_e(name)}</span>'
        for name, color in zip(info.classes, info.colors, strict=True)
    )
    intro = (
        "<p>Ranked by each image's own mean IU (classes in its truth or prediction). "
        "Each shows the image, the prediction over it, the ground truth (void white).</p>"
        f'<p class="key">{key}</p>'
    )
    best = _figures("best", evaluation.best, info.colors)
    worst = _figures("worst", evaluation.worst, info.colors)
    return f"{intro}<h3>Best</h3>{best}<h3>Worst</h3>{worst}"


def _figures(rank: str, examples: Iterable[Example], colors) -> str:
    figures = []
    for place, ex in enumerate(examples, 1):
        picture = plots.png(plots.example_picture(ex.image, ex.truth, ex.prediction, colors))
        caption = f"{rank} {place}: {ex.name}, mean IU {_pct(ex.mean_iu)}"
        width = max(picture_width(ex), MIN_EXAMPLE_WIDTH)  # small images enlarged
        figures.append(
            f'<figure class="example" data-rank="{rank}" data-index="{ex.index}" '
            f'data-mean-iu="{ex.mean_iu!r}"><img src="{_data_url(picture)}" '
            f'style="width: {width}px" alt="{_e(caption)}"><figcaption>{_e(caption)}'
            "</figcaption></figure>"
        )
    return f'<div class="examples">{"".join(figures)}</div>' if figures else "<p>None.</p>"


def picture_width(example: Example) -> int:
    """The width of :func:`~fcnseg.report.plots.example_picture`'s three panels."""
    return 3 * example.image.shape[1] + 8


def _config_tables(config: dict, columns: int = 3) -> str:
    """``config.json``'s fields and values (as JSON), in ``columns`` tables side by side."""
    items = list(config.items())
    per_table = max(1, -(-len(items) // columns))
    tables = []
    for start in range(0, len(items), per_table):
        rows = "".join(
            f'<tr><td>{_e(key)}</td><td class="text">{_e(json.dumps(value))}</td></tr>'
            for key, value in items[start : start + per_table]
        )
        tables.append(f'<table class="config"><tr><th>field</th><th>value</th></tr>{rows}</table>')
    return f'<div class="row">{"".join(tables)}</div>'


def _img(data: bytes, alt: str) -> str:
    return f'<img class="plot" src="{_data_url(data)}" alt="{_e(alt)}">'


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _swatch(color) -> str:
    r, g, b = color
    return f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'


def _pct(value: float | None) -> str:
    """A fraction as percent with two decimals; ``n/a`` for None or NaN."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _e(text: object) -> str:
    return html.escape(str(text))
