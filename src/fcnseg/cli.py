"""The ``fcnseg`` command: train, eval, predict, report, serve, convert-caffe, models, datasets."""

from __future__ import annotations

import argparse
import errno
import functools
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fcnseg import __version__
from fcnseg.data.dataset import SegmentationDataset, Transform
from fcnseg.data.images import BYTES_PER_PIXEL, MAX_PIXELS, MAX_PIXELS_ENV
from fcnseg.data.info import DataError, DatasetInfo
from fcnseg.data.registry import DATASETS
from fcnseg.deploy.backend import BACKEND_ENV, BACKENDS, default_backend
from fcnseg.errors import ConfigError, FcnsegWarning, UserError
from fcnseg.nets.weights import NORMALIZATIONS
from fcnseg.train.config import FIELD_TYPES, TrainConfig, build_val_set, num_heads, option_name
from fcnseg.train.device import PRECISIONS
from fcnseg.train.recipes import DEFAULT_RECIPE, RECIPES, get_recipe

FIELD_HELP = {
    "model": "registered model (fcnseg models)",
    "width": "backbone channel multiplier (1.0 = the published net)",
    "batch_norm": "VGG16 with batch norm",
    "learnable_upsampling": "learn the upsampling filters (default fixed bilinear)",
    "pad": "input padding of conv1 (100 as the reference)",
    "backbone_weights": "'imagenet' (torchvision's file) or a local state_dict path; "
    "none: from scratch",
    "init_from": "checkpoint of a coarser FCN to start from (staged training), or one per "
    "stream of a late-fusion net (color=PATH,hha=PATH); none: the backbone weights",
    "dataset": "dataset name (fcnseg datasets)",
    "data_root": "dataset folder; none: no folder (the synthetic dataset)",
    "train_split": "split to train on",
    "val_split": "split to validate on",
    "val_dataset": "dataset to validate on; none: the training dataset",
    "val_root": "folder of the validation dataset; none: --data-root",
    "normalization": "'imagenet' (ImageNet mean/std), 'imagenet-greyworld' (the same after "
    "scaling each channel of an image to ImageNet's mean grey: takes out exposure and "
    "colour cast), 'imagenet-greyworld-clip' (the same, clipped to 0-255 as a photo is), "
    "'caffe' (the reference's BGR mean), or the reference NYUDv2 and SIFT Flow nets' "
    "'nyud', 'nyud-hha', 'siftflow'; none: what the starting weights expect",
    "val_normalization": "normalisation of the validation images, on the training one's scale "
    "(e.g. imagenet-greyworld-clip for a net trained with imagenet-greyworld): it picks "
    "best.pt and is saved in the checkpoints as the one eval, predict and serve feed; "
    "none: --normalization",
    "crop": "random crop size; none: whole images at batch 1",
    "scale": "random scale range, two numbers",
    "flip": "random horizontal flips",
    "color_jitter": "colour jitter strength s in [0, 1): brightness, contrast and saturation "
    "factors in [1-s, 1+s], hue shift in [-s/4, s/4] turns, image only; 0: none",
    "batch_size": "images per step, over all processes (per rank: batch_size / world size)",
    "accumulate": "batches per update (gradient accumulation): one update is that of a batch of "
    "accumulate x batch_size images (mean or summed loss over all of them)",
    "workers": "data loader worker processes",
    "iterations": "parameter updates in all",
    "optimizer": "'sgd' or 'adamw'",
    "lr": "base learning rate (think of it together with normalize_loss)",
    "momentum": "SGD momentum",
    "weight_decay": "L2 weight decay of the weights",
    "bias_lr_mult": "lr multiplier of biases and norm parameters (no decay)",
    "schedule": "'fixed' or 'poly'",
    "poly_power": "exponent of the poly schedule",
    "warmup": "iterations of linear lr warm-up",
    "normalize_loss": "mean loss over pixels (else the reference's sum)",
    "class_weighting": "'none', 'median' (median-frequency balancing) or 'enet' "
    "(1 / ln(1.02 + the class's pixel share), bounded at about 50)",
    "label_smoothing": "label smoothing e in [0, 1): each pixel's target is 1-e on its class "
    "plus e spread evenly over all classes; 0: none",
    "ema": "decay d in [0, 1) of a moving average of the weights (e.g. 0.999), updated after "
    "each step; validation, best.pt and the deployed weights use the average; 0: none",
    "aux_weight": "weight w >= 0 of an auxiliary loss on each coarser stage of a skip net "
    "(FCN-8s: its FCN-32s and FCN-16s predictions, upsampled bilinearly); 0: none",
    "precision": "training precision: fp32, bf16 or fp16 (autocast; fp16 uses a grad scaler), "
    "or auto: bf16 where the device computes it natively (a GPU; a CPU with AVX512-BF16 or "
    "AMX), else fp32 on a CPU and fp16 on a GPU",
    "channels_last": "NHWC memory layout (faster on GPUs; slower to train on the CPUs measured)",
    "compile": "torch.compile the model",
    "dropout": "dropout after fc6 and fc7 (0.5 as the reference)",
    "eval_every": "validate and checkpoint every N iterations",
    "keep_checkpoints": "also keep each validation's checkpoint as iter_N.pt in the run "
    "folder, each as large as last.pt (default: only last.pt and best.pt)",
    "log_every": "log the loss every N iterations",
    "seed": "random seed of the run (data order, augmentation, init)",
    "device": "'auto', 'cpu', 'cuda', 'cuda:1', ...",
}


def _or_none(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type for an optional field: ``none`` (any case) sets it back to None."""

    def convert(text: str):
        return None if text.lower() == "none" else parse(text)

    convert.__name__ = parse.__name__  # argparse names the type in its messages
    return convert


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, typed from its annotation. A flag not
    given leaves no attribute (``SUPPRESS``), so the recipe's value stays; ``none``
    unsets an optional field (a file named ``none``: write ``./none``)."""
    group = parser.add_argument_group("recipe overrides (default: the recipe's value)")
    for name, (base, optional) in FIELD_TYPES.items():
        kw = {"dest": name, "default": argparse.SUPPRESS, "help": FIELD_HELP[name]}
        if base is bool:
            group.add_argument(option_name(name), action=argparse.BooleanOptionalAction, **kw)
        elif base is tuple:
            group.add_argument(
                option_name(name), type=float, nargs=2, metavar=("LOW", "HIGH"), **kw
            )
        else:
            parse = _or_none(base) if optional else base
            group.add_argument(option_name(name), type=parse, metavar=name.upper(), **kw)


def _config_overrides(args: argparse.Namespace) -> dict:
    """The config fields given on the command line (and only those)."""
    return {name: getattr(args, name) for name in FIELD_TYPES if hasattr(args, name)}


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe with the command line's overrides; :class:`ConfigError` if a value is bad."""
    return get_recipe(args.recipe or DEFAULT_RECIPE).replace(**_config_overrides(args))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a recipe into a new run folder, or ``--resume`` the run in one: then the
    base config is the run's ``config.json`` and the flags given change only their fields."""
    from fcnseg.train.engine import train
    from fcnseg.train.run import RunFolder

    recipe = args.recipe or DEFAULT_RECIPE
    out = Path(args.out or f"runs/{recipe}")
    if args.resume and args.recipe is not None:
        raise ConfigError(
            f"--resume takes the run's own config.json: leave out --recipe (--resume --out {out})"
        )
    if args.resume:
        cfg = RunFolder(out).saved_config().replace(**_config_overrides(args))
        print(f"resuming {out}: {cfg.model} on {cfg.dataset} to iteration {cfg.iterations}")
    else:
        cfg = _config_from_args(args)
        loss = "mean" if cfg.normalize_loss else "summed (unnormalised)"
        print(f"recipe {recipe}: {cfg.model} on {cfg.dataset}, lr {cfg.lr:g} with {loss} "
              f"loss -> {out}")  # fmt: skip
    tic = time.time()
    result = train(cfg, out, resume=args.resume, overwrite=args.overwrite, force=args.force,
                   progress=not args.quiet)  # fmt: skip
    if result["trained"] == 0:
        print(f"{out}: the run already finished at iteration {result['iteration']}; nothing "
              "to do (give a larger --iterations to train on)")  # fmt: skip
        return 0
    print(f"done in {time.time() - tic:.0f} s: val mean IU {result['mean_iu']:.4f} "
          f"(best {result['best_mean_iu']:.4f}); checkpoints in {out}")  # fmt: skip
    if num_heads(cfg) == 1:  # the report draws one label map per image
        print(f"report of the run: fcnseg report {shlex.quote(str(out))}")
    return 0


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def format_table(metrics: dict, classes: tuple[str, ...]) -> str:
    """The four metrics, then per-class IU and accuracy, in percent."""
    lines = [
        f"pixel acc  {100 * metrics['pixel_acc']:6.2f}",
        f"mean acc   {100 * metrics['mean_acc']:6.2f}",
        f"mean IU    {100 * metrics['mean_iu']:6.2f}",
        f"f.w. IU    {100 * metrics['fw_iu']:6.2f}",
        "",
        f"{'class':<16}{'IU':>8}{'acc':>8}",
    ]
    rows = zip(classes, metrics["per_class_iu"], metrics["per_class_acc"], strict=True)
    for name, iu, acc in rows:
        fmt = lambda v: "     n/a" if v is None or v != v else f"{100 * v:8.2f}"  # noqa: E731
        lines.append(f"{name:<16}{fmt(iu)}{fmt(acc)}")
    return "\n".join(lines)


def _data_for(ckpt: dict, args: argparse.Namespace) -> TrainConfig:
    """The checkpoint's training config, its validation data replaced by ``--dataset``,
    ``--data-root`` and ``--split`` where given (the training data stays: VOC's
    seg11valid is computed from the SBD training list)."""
    cfg = TrainConfig.from_dict(ckpt.get("train_config", {}))
    own = cfg.val_dataset or cfg.dataset
    name = args.dataset or own
    if name == "synthetic" and args.data_root is not None:
        raise ConfigError(
            f"--data-root {args.data_root}: the synthetic dataset is drawn, not read from a "
            "folder; leave --data-root out, or name the dataset in it with --dataset"
        )
    if args.data_root is not None:
        root = args.data_root
    elif name == own:
        root = cfg.val_root
    elif name in ("synthetic", cfg.dataset):
        root = None  # no folder, or the training data's folder
    else:
        raise DataError(f"--dataset {name} needs --data-root (the checkpoint's data is {own})")
    return cfg.replace(val_dataset=name, val_root=root, val_split=args.split or cfg.val_split)


def _checked_dataset(
    ckpt: dict, args: argparse.Namespace, transform: Transform | None = None
) -> tuple[TrainConfig, SegmentationDataset]:
    """The data ``eval`` and ``predict`` run on (:func:`_data_for`) and its config.

    Raises:
        DataError: the dataset's classes (names, in order) are not the checkpoint's,
            unless ``--allow-class-mismatch`` (the user maps classes on purpose).
    """
    cfg = _data_for(ckpt, args)
    dataset = build_val_set(cfg, transform)
    dataset.max_pixels = args.max_pixels  # built here: ours to set
    trained, data = tuple(ckpt["dataset"]["classes"]), dataset.info.classes
    if trained != data and not args.allow_class_mismatch:
        raise DataError(
            f"the checkpoint predicts {len(trained)} classes ({_listed(trained)}) but "
            f"{cfg.val_dataset} has {len(data)} ({_listed(data)}); evaluate on the data it "
            "was trained for, or pass --allow-class-mismatch if the indices match on purpose"
        )
    return cfg, dataset


def _listed(names: tuple[str, ...], most: int = 4) -> str:
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def class_names(trained: tuple[str, ...], data: tuple[str, ...]) -> tuple[str, ...]:
    """One name per confusion-matrix row: the dataset's classes, then those only the
    checkpoint predicts (a checkpoint with more classes than the data, forced)."""
    return data + tuple(f"{name} (model)" for name in trained[len(data) :])


def cmd_eval(args: argparse.Namespace) -> int:
    from fcnseg.data.transforms import eval_transform
    from fcnseg.deploy.files import check_eval_json, write_eval_json
    from fcnseg.train.engine import evaluate, json_safe

    _checkpoint_from_weights(args)
    if args.json:  # found before the evaluation, not after
        check_eval_json(Path(args.json))
    seg = _segmenter(args, batch_size=args.batch_size)
    ckpt = seg.checkpoint
    cfg, dataset = _checked_dataset(ckpt, args, eval_transform(seg.normalization))
    names = class_names(tuple(ckpt["dataset"]["classes"]), dataset.info.classes)
    if seg.num_heads > 1:
        return _eval_heads(args, seg, cfg, dataset)
    tic = time.time()
    metrics = evaluate(seg.as_module(), dataset, len(names), seg.device,
                       batch_size=args.batch_size)  # fmt: skip
    print(f"{cfg.val_dataset}/{cfg.val_split}: {len(dataset)} images, {time.time() - tic:.1f} s "
          f"on {seg.backend}, {seg.normalization} input")  # fmt: skip
    print(format_table(metrics, names))
    if "warning" in metrics:
        print(f"warning: {metrics['warning']}")
    if args.json:
        result = {"checkpoint": str(args.checkpoint), "dataset": cfg.val_dataset,
                  "split": cfg.val_split, "classes": list(names), **_tta(args), **_ran(seg),
                  **json_safe(metrics)}  # fmt: skip
        write_eval_json(Path(args.json), result)
        print(f"metrics written to {args.json}")
    return 0


def _ran(seg) -> dict:
    """What an evaluation ran on, for its ``--json``: backend, precision, normalization."""
    return {"backend": seg.backend.backend, "precision": seg.precision,
            "normalization": seg.normalization}  # fmt: skip


def _segmenter(args: argparse.Namespace, **kwargs):
    """The Segmenter ``--backend``, ``--precision``, ``--device``, the layout and the
    test-time augmentation ask for (``predict``, ``eval``)."""
    from fcnseg.deploy.inference import Segmenter

    return Segmenter.from_checkpoint(
        args.checkpoint,
        backend=args.backend or default_backend(),
        precision=args.precision,
        device=None if args.device == "auto" else args.device,
        channels_last=args.channels_last,
        normalization=args.normalization,
        **_tta(args),
        **kwargs,
    )


def _eval_heads(args: argparse.Namespace, seg, cfg: TrainConfig, dataset) -> int:
    """``eval`` of a net with several heads (SIFT Flow's): each on its own labels, with
    ``seg``'s backend, precision and test-time augmentation (torch: the ONNX export keeps
    one head)."""
    from fcnseg.data.registry import build_dataset, head_datasets
    from fcnseg.deploy.files import write_eval_json
    from fcnseg.train.engine import json_safe
    from fcnseg.train.heads import evaluate_each

    names = head_datasets(cfg.val_dataset, seg.num_heads)
    root = cfg.val_root or cfg.data_root
    sets = [dataset] + [build_dataset(n, root, cfg.val_split, dataset.transform) for n in names[1:]]
    for data in sets:
        data.max_pixels = args.max_pixels
    tic = time.time()
    modules = [seg.as_module(k) for k in range(seg.num_heads)]
    results = evaluate_each(modules, sets, seg.device, batch_size=args.batch_size)
    print(f"{cfg.val_dataset}/{cfg.val_split}: {len(dataset)} images, {len(sets)} heads, "
          f"{time.time() - tic:.1f} s on {seg.backend}, {seg.normalization} input")  # fmt: skip
    for data, metrics in zip(sets, results, strict=True):
        print(f"\n{data.info.name}\n{format_table(metrics, data.info.classes)}")
        if "warning" in metrics:
            print(f"warning: {metrics['warning']}")
    if args.json:
        heads = [{"dataset": data.info.name, "classes": list(data.info.classes), **json_safe(m)}
                 for data, m in zip(sets, results, strict=True)]  # fmt: skip
        # The first head's at the top, as a one-head net's: every eval result reads alike.
        result = {"checkpoint": str(args.checkpoint), "split": cfg.val_split, **_tta(args),
                  **_ran(seg), **heads[0], "heads": heads}  # fmt: skip
        write_eval_json(Path(args.json), result)
        print(f"metrics written to {args.json}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from fcnseg.data.images import open_image, read_image
    from fcnseg.deploy.files import (
        check_plan,
        expand_inputs,
        output_names,
        plan_outputs,
        write_predictions,
    )

    _checkpoint_from_weights(args, inputs=True)
    seg = _segmenter(args, compile=args.compile, batch_size=args.batch_size)
    print(f"running {seg.backend}")
    info = DatasetInfo(**seg.checkpoint["dataset"])
    if args.inputs:
        items = expand_inputs(args.inputs)[: args.limit]
        for path in items:  # every header read (and its size checked) before any output
            open_image(path, args.max_pixels).close()
        names, inputs = output_names(items), items
        load = functools.partial(read_image, max_pixels=args.max_pixels)
    else:
        _, dataset = _checked_dataset(seg.checkpoint, args)
        items = list(range(len(dataset)))[: args.limit]
        names = [dataset.names[i] for i in items]
        inputs = [path for pair in getattr(dataset, "pairs", ()) for path in pair]

        def load(index: int) -> np.ndarray:
            return dataset.load(index)[0]

    if not items:
        raise DataError("nothing to predict: give image files, folders or globs, or --dataset")
    out = Path(args.out)
    plan = plan_outputs(items if args.inputs else names, names, out, not args.no_overlay)
    check_plan(plan, inputs, overwrite=args.overwrite)
    chunk = 4 * args.batch_size  # images held in memory at once
    written = write_predictions(seg, plan, items, load, info, chunk)
    images = f"{len(items)} image{'s' if len(items) > 1 else ''}"
    print(f"predictions for {images} written to {out}/: {written} files "
          f"(<name>.png: labels with the {info.name} palette"
          f"{'' if args.no_overlay else '; <name>_overlay.png'})")  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from fcnseg.deploy.export import CHECKPOINT_SHA256, OnnxModel, export_checkpoint
    from fcnseg.train.checkpoint import model_from_checkpoint

    model, ckpt = model_from_checkpoint(args.checkpoint)
    export_checkpoint(model, args.checkpoint, args.output, info=ckpt)
    runner = OnnxModel(args.output)
    print(f"exported {args.checkpoint} to {args.output} (dynamic batch, height, width; "
          f"checkpoint sha256 {runner.metadata[CHECKPOINT_SHA256][:12]}...)")  # fmt: skip
    for size in ((64, 80), (97, 131)):
        x = torch.randn(2, 3, *size)
        with torch.inference_mode():
            diff = (runner(x) - model(x)).abs().max().item()
        print(f"parity {size[0]}x{size[1]}: max abs diff vs torch {diff:.2e}")
        if diff > 1e-4:
            raise RuntimeError(f"ONNX output differs from torch by {diff:.2e} (> 1e-4)")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from fcnseg.deploy.export import check_target
    from fcnseg.deploy.inference import Segmenter
    from fcnseg.deploy.quantize import quantize_checkpoint

    check_target(args.output, args.checkpoint)  # before the images are read
    images = _calibration_images(args)
    done = quantize_checkpoint(args.checkpoint, images, args.output, keep_float=args.keep_float)
    count = f"{len(images)} image{'s' if len(images) > 1 else ''}"
    print(f"int8 model written to {args.output}: calibrated on {count}; "
          f"int8: {_listed(done.int8_layers, 3)} ({len(done.int8_layers)} convolutions); "
          f"float: {', '.join(done.float_layers) or 'no convolution'} and the "
          "upsampling")  # fmt: skip
    fp32 = Segmenter.from_checkpoint(args.checkpoint, backend="torch", precision="fp32")
    int8 = Segmenter.from_checkpoint(args.output)
    same = total = 0
    for a, b in zip(fp32.predict(images), int8.predict(images), strict=True):
        same, total = same + int((a == b).sum()), total + a.size
    print(f"labels equal to fp32 on the calibration images: {100 * same / total:.2f}% "
          f"({int8.backend}; judge it on held-out images: fcnseg eval {args.output})")  # fmt: skip
    return 0


def _calibration_images(args: argparse.Namespace) -> list[np.ndarray]:
    """``--calibration-images`` images, evenly spread over the folder, files or dataset
    that ``--calibrate`` names."""
    from fcnseg.data.images import read_image
    from fcnseg.data.registry import build_dataset
    from fcnseg.deploy.files import expand_inputs
    from fcnseg.deploy.inference import load_model_file

    source = args.calibrate
    if source in DATASETS and not Path(source).exists():
        _, ckpt = load_model_file(args.checkpoint)
        cfg = TrainConfig.from_dict(ckpt.get("train_config", {}))
        same = source == cfg.dataset
        root = args.data_root or (cfg.data_root if same else None)
        dataset = build_dataset(source, root, args.split or (cfg.train_split if same else "train"))
        dataset.max_pixels = args.max_pixels  # built here: ours to set
        return [dataset.load(i)[0] for i in _spread(len(dataset), args.calibration_images)]
    try:
        paths = expand_inputs([source])
    except DataError as e:
        raise DataError(f"--calibrate: {e}") from None
    if not paths:
        raise DataError(f"--calibrate {source}: no images there")
    picked = _spread(len(paths), args.calibration_images)
    return [read_image(paths[i], max_pixels=args.max_pixels) for i in picked]


def _spread(n: int, k: int) -> list[int]:
    """``k`` of the indices 0..n-1, evenly spaced (all of them when n <= k)."""
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(min(k, n))})


def cmd_report(args: argparse.Namespace) -> int:
    from fcnseg.report.html import make_report

    path = make_report(args.run_dir, args.output, overwrite=args.overwrite, device=args.device,
                       batch_size=args.batch_size, examples=args.examples)  # fmt: skip
    print(f"report written to {path} (one file, images inside: opens offline)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from fcnseg.serve.launch import serve
    except ModuleNotFoundError as e:  # the serve extra is not installed
        if e.name not in ("fastapi", "starlette", "anyio", "uvicorn", "prometheus_client",
                          "python_multipart"):  # fmt: skip
            raise
        raise UserError(f"fcnseg serve needs {e.name}: pip install 'fcnseg[serve]'") from None
    from fcnseg.serve.config import Limits, ServeOptions

    _checkpoint_from_weights(args)
    limits = Limits(max_body_bytes=round(args.max_body_mb * 2**20), max_pixels=args.max_pixels,
                    max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                    max_queue=args.max_queue, read_timeout_s=args.read_timeout,
                    max_connections=args.max_connections)  # fmt: skip
    backend = args.backend or default_backend()
    options = ServeOptions(args.checkpoint, backend, args.precision, args.device, limits,
                           args.threads, args.normalization)  # fmt: skip
    serve(options, host=args.host, port=args.port, workers=args.workers)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fcnseg.nets.registry import MODELS, build_model

    if args.weights:
        return _list_weights()
    for name, spec in MODELS.items():
        print(f"{name:<18} {spec.description}")
        if args.geometry:
            model = build_model(name, 21, width=0.125)
            print("    " + model.describe_geometry().replace("\n", "\n    "))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    for name, cls in DATASETS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        info = getattr(cls, "info", None)
        classes = f" [{info.num_classes} classes]" if isinstance(info, DatasetInfo) else ""
        print(f"{name:<18} {doc}{classes}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a recipe", description="Train a model from a recipe; "
                       "every recipe field can be overridden.")  # fmt: skip
    p.add_argument("--recipe", choices=list(RECIPES), help=f"preset to start from (default: "
                   f"{DEFAULT_RECIPE}); not with --resume (the run's config.json)")  # fmt: skip
    p.add_argument("--out", help="run folder (default: runs/<recipe>); one that holds a run "
                   "needs --resume or --overwrite")  # fmt: skip
    resume = (
        "continue the run in --out from its last.pt, with its config.json; the flags given "
        "change only their fields (model, data, optimisation: --force)"
    )
    p.add_argument("--resume", action="store_true", help=resume)
    overwrite = "replace the run in --out (its files go once this run starts to write)"
    p.add_argument("--overwrite", action="store_true", help=overwrite)
    force = "with --resume: accept changed model, data or optimisation fields (mixes two runs)"
    p.add_argument("--force", action="store_true", help=force)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_options(p)
    p.set_defaults(func=cmd_train)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """Which engine runs the model, in which precision: predict, eval and serve."""
    p.add_argument("--backend", choices=BACKENDS,
                   help=f"auto (default, or ${BACKEND_ENV}): the fastest engine and precision "
                   "this CPU has among those installed (README: which engine runs); torch; "
                   "onnxruntime or openvino: run <checkpoint>.onnx, exported again whenever "
                   "the checkpoint changes (or the .onnx file given)")  # fmt: skip
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 where the hardware has it, else fp32; an int8 model "
                   "file (fcnseg quantize) runs in int8")  # fmt: skip


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """Which images to run on, and where: shared by eval and predict."""
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW instead of the channels-last layout")  # fmt: skip
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="dataset (default: the checkpoint's validation dataset)")  # fmt: skip
    p.add_argument("--data-root", help="dataset folder (default: the checkpoint's)")
    p.add_argument("--split", help="split (default: the checkpoint's validation split)")
    p.add_argument("--allow-class-mismatch", action="store_true",
                   help="run on a dataset whose classes differ from the checkpoint's "
                   "(class indices mapped on purpose)")  # fmt: skip
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    p.add_argument("--max-pixels", type=positive_int,
                   help="refuse image files with more pixels (width x height), from their "
                   f"header (default: ${MAX_PIXELS_ENV} if set, else {MAX_PIXELS:,}: the "
                   f"largest image the published FCN-8s, at about {BYTES_PER_PIXEL} B per "
                   "pixel in fp32, segments in this machine's memory)")  # fmt: skip
    _add_normalization(p)
    p.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="test-time augmentation: flip averages each image's prediction "
                   "with that of its left-right mirror")  # fmt: skip
    p.add_argument("--tta-scales", type=positive_float, nargs="+", default=[1.0],
                   metavar="S", help="also segment the image resized by these factors "
                   "(e.g. 0.75 1 1.25) and average the probabilities at its own size")  # fmt: skip


def _add_normalization(p: argparse.ArgumentParser) -> None:
    """How to feed the checkpoint's pixels: shared by eval, predict and serve."""
    p.add_argument("--normalization", choices=NORMALIZATIONS,
                   help="feed the pixels this way instead of the checkpoint's own: one on its "
                   "scale, differing in the grey-world balance or its clip (e.g. "
                   "imagenet-greyworld-clip for a net trained with imagenet-greyworld: a "
                   "dusk sky balanced past 255 is clipped as a daylight photo's is)")  # fmt: skip


def _tta(args: argparse.Namespace) -> dict:
    """The test-time augmentation ``--tta`` and ``--tta-scales`` ask for."""
    return {"tta_flip": args.tta == "flip", "tta_scales": tuple(args.tta_scales)}


def _add_eval(sub) -> None:
    helptext = "evaluate a checkpoint: the four metrics and per-class IU"
    p = sub.add_parser("eval", help=helptext, description=helptext)
    _add_checkpoint(p)
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--batch-size", type=positive_int, default=4,
                   help="same-size images per pass")  # fmt: skip
    _add_engine_options(p)
    _add_data_options(p)
    p.set_defaults(func=cmd_eval)


def _add_predict(sub) -> None:
    helptext = "write label maps and overlays for images"
    p = sub.add_parser("predict", help=helptext, description=helptext)
    _add_checkpoint(p)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs")
    p.add_argument("--out", default="predictions",
                   help="output folder, apart from the inputs: <name>.png and "
                   "<name>_overlay.png per input, <name> its path relative to the deepest "
                   "folder holding all inputs; inputs differing only in suffix keep it "
                   "(a.jpg -> a.jpg.png). Every output is checked before the first is "
                   "written")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never an input)")  # fmt: skip
    p.add_argument("--limit", type=positive_int, help="at most this many images")
    p.add_argument("--no-overlay", action="store_true", help="labels only")
    _add_engine_options(p)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (torch)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="same-size images per pass")  # fmt: skip
    _add_data_options(p)
    p.set_defaults(func=cmd_predict)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX",
                       description="Export to ONNX (dynamic batch, height, width) and check "
                       "its output against torch on two input sizes.")  # fmt: skip
    p.add_argument("checkpoint", help="a checkpoint written by fcnseg train")
    p.add_argument("output", help="the .onnx file to write (its folder is created; the "
                   "checkpoint's sha256 goes into its metadata)")  # fmt: skip
    p.set_defaults(func=cmd_export)


def _add_quantize(sub) -> None:
    from fcnseg.deploy.quantize import KEEP_FLOAT

    helptext = "quantize a checkpoint to int8 (post-training, calibrated on your images)"
    p = sub.add_parser("quantize", help=helptext, description=helptext + ": an ONNX file "
                       "that predict, eval and serve run with onnxruntime or OpenVINO; needs "
                       "pip install 'fcnseg[cpu]'")  # fmt: skip
    p.add_argument("checkpoint", help="a checkpoint written by fcnseg train or convert-caffe")
    p.add_argument("--calibrate", required=True, metavar="DATASET_OR_FOLDER",
                   help="images to measure the activations' ranges on: a folder, file or "
                   "glob, or a dataset name (then --data-root and --split)")  # fmt: skip
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="the .onnx file to write (an earlier one fcnseg wrote is replaced)",
    )
    p.add_argument(
        "--calibration-images",
        type=positive_int,
        default=32,
        metavar="N",
        help="images used, evenly spread over the source (default: %(default)s)",
    )
    p.add_argument("--data-root", help="with a dataset name: its folder (default: the "
                   "checkpoint's, for its own dataset)")  # fmt: skip
    p.add_argument("--split", help="with a dataset name: its split (default: the "
                   "checkpoint's training split)")  # fmt: skip
    p.add_argument(
        "--keep-float",
        nargs="*",
        default=list(KEEP_FLOAT),
        metavar="PREFIX",
        help="convolutions kept in float, by name prefix (default: "
        f"{' '.join(KEEP_FLOAT)}: conv1_1 and the score layers); the flag alone: none",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        help="refuse image files with more pixels (as fcnseg predict's)",
    )
    p.set_defaults(func=cmd_quantize)


def _add_report(sub) -> None:
    helptext = "write a run's report: one HTML page with its curves, metrics and images"
    p = sub.add_parser("report", help=helptext, description=helptext + "; best.pt is "
                       "evaluated on the run's validation split")  # fmt: skip
    p.add_argument("run_dir", help="a run folder written by fcnseg train (its --out)")
    p.add_argument("-o", "--output", help="the .html file to write (default: "
                   "RUN_DIR/report.html); an earlier report there is replaced")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output file even if it is not a report")  # fmt: skip
    p.add_argument("--examples", type=positive_int, default=3,
                   help="best and worst validation images shown, each")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=4,
                   help="same-size images per pass")  # fmt: skip
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    p.set_defaults(func=cmd_report)


def _add_serve(sub) -> None:
    from fcnseg.serve.config import Limits  # no extra needed: the defaults only

    limits = Limits()
    helptext = "serve a checkpoint: an HTTP API (POST /v1/segment) and a web page"
    p = sub.add_parser("serve", help=helptext, description=helptext + "; needs the serve "
                       "extra (pip install 'fcnseg[serve]')")  # fmt: skip
    _add_checkpoint(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; 0.0.0.0: all)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="processes answering on the port, each with its own model")  # fmt: skip
    p.add_argument("--threads", type=positive_int,
                   help="torch threads per process (default: all cores)")  # fmt: skip
    _add_engine_options(p)
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    _add_normalization(p)
    group = p.add_argument_group("limits (shown by GET /v1/model)")
    group.add_argument("--max-body-mb", type=positive_float,
                       default=limits.max_body_bytes / 2**20,
                       help="largest request body in MiB; more: 413 "
                       "(default: %(default)g)")  # fmt: skip
    group.add_argument("--max-pixels", type=int, default=limits.max_pixels,
                       help="largest image (width x height), read from its header before "
                       "decoding; more: 413; also the most pixels in one batch "
                       "(default: %(default)s)")  # fmt: skip
    group.add_argument("--max-batch", type=int, default=limits.max_batch,
                       help="most same-size images in one forward pass "
                       "(default: %(default)s)")  # fmt: skip
    group.add_argument("--batch-wait-ms", type=float, default=limits.batch_wait_ms,
                       help="how long an image waits for others of its size "
                       "(default: %(default)g)")  # fmt: skip
    group.add_argument("--max-queue", type=int, default=limits.max_queue,
                       help="images waiting for the model; more: 503 with Retry-After "
                       "(default: %(default)s)")  # fmt: skip
    group.add_argument("--read-timeout", type=float, default=limits.read_timeout_s,
                       help="seconds a client has to send the body; more: 408 "
                       "(default: %(default)g)")  # fmt: skip
    group.add_argument("--max-connections", type=int, default=limits.max_connections,
                       help="open connections at once, per worker; more: 503 "
                       "(default: %(default)s)")  # fmt: skip
    p.set_defaults(func=cmd_serve)


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    """The model to run: a checkpoint, or ``--weights`` instead."""
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by fcnseg train "
                   "(best.pt) or fcnseg convert-caffe; leave it out with --weights")  # fmt: skip
    p.add_argument("--weights", metavar="NAME_OR_FILE",
                   help="instead of a checkpoint: the reference's trained net NAME (fcnseg "
                   "models --weights), downloaded and converted once into torch.hub's cache, "
                   "or a converted file")  # fmt: skip


def _checkpoint_from_weights(args: argparse.Namespace, inputs: bool = False) -> None:
    """Point ``args.checkpoint`` at the file ``--weights`` names, fetched and converted
    once; with ``inputs`` (predict) the positional is then the first input."""
    if args.weights is None:
        if args.checkpoint is None:
            raise ConfigError("give a checkpoint, or --weights NAME (fcnseg models --weights)")
        return
    if args.checkpoint is not None:
        if not inputs:
            raise ConfigError(f"give {args.checkpoint} or --weights {args.weights}, not both")
        args.inputs.insert(0, args.checkpoint)
    from fcnseg.train.caffe_checkpoint import weights_checkpoint

    args.checkpoint = str(weights_checkpoint(args.weights))


def _list_weights() -> int:
    from fcnseg.nets.reference_weights import REFERENCE_WEIGHTS

    for name, w in REFERENCE_WEIGHTS.items():
        metrics = "; ".join(
            f"{split} " + ", ".join(f"{k} {100 * v:.1f}" for k, v in values.items())
            for split, values in w.metrics.items()
        )
        print(f"{name:<22} {w.model} on {w.dataset} ({w.num_classes} classes, {w.normalization} "
              f"input): {metrics or 'no metrics reported'}")  # fmt: skip
        print(f"{'':<22} {w.url or 'the reference publishes no file'}")
    return 0


def cmd_convert_caffe(args: argparse.Namespace) -> int:
    from fcnseg.train.caffe_checkpoint import convert_caffemodel
    from fcnseg.train.checkpoint import save_checkpoint

    out = Path(args.output)
    if out.exists() and out.resolve() == Path(args.caffemodel).resolve():
        raise UserError(f"-o {out}: that is the caffemodel itself; write the checkpoint elsewhere")
    if out.exists() and not args.overwrite:
        raise UserError(f"-o {out} exists: pass --overwrite to replace it")
    tic = time.time()
    ckpt = convert_caffemodel(args.caffemodel, args.model, dataset=args.dataset,
                              width=args.width)  # fmt: skip
    save_checkpoint(ckpt, out)
    cfg, info = ckpt["model_config"], ckpt["dataset"]
    upsampling = "learned" if cfg["learnable_upsampling"] else "fixed bilinear"
    print(f"converted {args.caffemodel} to {out} in {time.time() - tic:.1f} s: {cfg['name']}, "
          f"{cfg['num_classes']} classes ({info['name']}), {ckpt['normalization']} input, "
          f"{upsampling} upsampling")  # fmt: skip
    print(f"run it: fcnseg predict {shlex.quote(str(out))} IMAGE...")
    return 0


def _add_convert_caffe(sub) -> None:
    helptext = "convert a reference .caffemodel into an fcnseg checkpoint (no Caffe needed)"
    p = sub.add_parser("convert-caffe", help=helptext, description=helptext + "; every "
                       "layer name and shape is checked. The file then runs in predict, eval, "
                       "serve and export with no flag (classes, BGR input and mean "
                       "included)")  # fmt: skip
    p.add_argument("caffemodel", help="the .caffemodel file (e.g. fcn8s-heavy-pascal.caffemodel)")
    p.add_argument("--model", required=True,
                   help="a reference weights name (fcnseg models --weights: gives the model, "
                   "classes and input) or a model name (fcnseg models)")  # fmt: skip
    p.add_argument("-o", "--output", required=True, help="the checkpoint to write (.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="the dataset whose classes it predicts (default: the weights name's; "
                   "with a model name, numbered classes)")  # fmt: skip
    p.add_argument("--width", type=positive_float,
                   help="channel multiplier (default: read from the file; 1 for the "
                   "published nets)")  # fmt: skip
    p.set_defaults(func=cmd_convert_caffe)


def _add_listings(sub) -> None:
    p = sub.add_parser("models", help="list the models", description="List registered models.")
    p.add_argument("--geometry", action="store_true", help="print each net's crop offsets")
    p.add_argument("--weights", action="store_true",
                   help="list the reference's trained nets (for --weights NAME)")  # fmt: skip
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("datasets", help="list the datasets", description="List datasets.")
    p.set_defaults(func=cmd_datasets)


def build_parser() -> argparse.ArgumentParser:
    import torch

    parser = argparse.ArgumentParser(
        prog="fcnseg", description="Fully Convolutional Networks for semantic segmentation."
    )
    parser.add_argument("--version", action="version",
                        version=f"fcnseg {__version__} (torch {torch.__version__})")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_predict, _add_export, _add_quantize, _add_report,
                _add_serve, _add_convert_caffe, _add_listings):  # fmt: skip
        add(sub)
    return parser


# OSErrors about the user's files and machine, not about fcnseg: no permission, no
# such file or folder, a folder where a file should be, a full or read-only disk.
USER_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
     errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.ENOTEMPTY}
)  # fmt: skip


def user_error_message(error: BaseException) -> str | None:
    """The one line to print for an error the user can fix, or None for a bug.

    - :class:`~fcnseg.errors.UserError` (ConfigError, DataError, WeightsError, ...):
      a flag, config value or file fcnseg cannot use; its message names it.
    - FloatingPointError: the training loss diverged; the message names the lr.
    - :class:`~fcnseg.errors.FcnsegWarning` raised as an error, as ``-W error`` or
      ``PYTHONWARNINGS=error`` ask: the warning's own line.
    - OSError with an errno in :data:`USER_ERRNOS` (permission denied, disk full,
      is a directory, ...): the file it names and the system's reason.

    Anything else, a bare ValueError or KeyError included, is a bug in fcnseg and
    keeps its traceback: code that a user's input can reach raises a UserError.
    """
    if isinstance(error, UserError | FcnsegWarning | FloatingPointError):
        return str(error)
    if isinstance(error, OSError) and error.errno in USER_ERRNOS:
        reason = error.strerror or str(error)
        return f"{error.filename}: {reason}" if error.filename else reason
    return None


def _one_line_warnings(show: Callable) -> Callable:
    """A ``warnings.showwarning`` for the command line: ours (:class:`FcnsegWarning`) as
    one ``warning:`` line on stderr, without the source line a library user is shown;
    the rest as ``show`` shows them."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, FcnsegWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def main(argv: list[str] | None = None) -> int:
    """Run one ``fcnseg`` command; the exit status: 0 done, 2 a user error (one line
    on stderr, see :func:`user_error_message`), 130 interrupted. Bugs raise. Warnings
    of ours are one line on stderr (:func:`_one_line_warnings`), or an error line where
    warnings are errors."""
    args = build_parser().parse_args(argv)
    return run_reporting("fcnseg", lambda: args.func(args))


def run_reporting(name: str, run: Callable[[], int | None]) -> int:
    """Call ``run`` as a command named ``name``; its exit status: ``run``'s own (0 for
    None), 2 for a user error (``name: error: ...``, one line on stderr, see
    :func:`user_error_message`), 130 interrupted. Bugs raise. Warnings of ours are one
    line on stderr (:func:`_one_line_warnings`). ``fcnseg`` and the bench scripts end
    this way."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return run() or 0
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise
        print(f"{name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
