"""Weight surgery: ImageNet weights into an FCN, and a coarser FCN into a finer one.

The reference's ``surgery.transplant`` copies a classifier's convolutions, reshapes
its fully connected layers into fc6/fc7 and drops the ImageNet classifier. Here the
classifier is loaded with its own (torchvision) key names and then convolutionalized
(:func:`fcnseg.nets.fcn.fcn_from_classifier`), so the reshape lives in one place.
Staged training (section 4.2) starts FCN-16s from FCN-32s and FCN-8s from FCN-16s;
the late-fusion NYUDv2 net starts each stream from a trained one-stream net.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from fcnseg.nets.weights import WeightsError, load_strict, read_state_dict, weights_entry


def load_backbone_weights(
    classifier: nn.Module, weights: str | os.PathLike, *, name: str, batch_norm: bool = False
) -> None:
    """Load ImageNet weights into a backbone classifier, in place.

    Args:
        classifier: a backbone (:class:`~fcnseg.nets.backbones.VGG16`, ``AlexNet``).
        weights: a local torchvision-format state_dict file, or ``"imagenet"`` to
            download torchvision's published file through torch.hub's cache, hash checked.
        name: the backbone's name (``vgg16`` or ``alexnet``), to pick the published file.

    A backbone whose first convolution reads more channels than the file's (RGB-D:
    4) gets the file's RGB filters and, for each extra channel, their mean over
    R, G and B, as the reference initialises its colour + depth net.
    """
    if str(weights) == "imagenet":
        url = weights_entry(name, batch_norm=batch_norm).url
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True)
        source = url
    else:
        state = read_state_dict(weights)
        source = str(weights)
    load_strict(classifier, _widen_first_conv(state, classifier), source)


def _widen_first_conv(
    state: Mapping[str, torch.Tensor], classifier: nn.Module
) -> Mapping[str, torch.Tensor]:
    """``state`` with ``features.0.weight`` (O, 3, k, k) extended to the classifier's
    (O, C, k, k), C > 3, by the mean of its 3 input channels; otherwise as it is."""
    key = "features.0.weight"
    own, theirs = classifier.state_dict().get(key), state.get(key)
    if own is None or theirs is None or theirs.ndim != 4 or theirs.shape[1] != 3:
        return state
    if own.shape[1] <= 3 or own.shape[0] != theirs.shape[0] or own.shape[2:] != theirs.shape[2:]:
        return state  # load_strict names the mismatch
    mean = theirs.mean(1, keepdim=True).expand(-1, own.shape[1] - 3, -1, -1)
    return {**state, key: torch.cat([theirs, mean], 1)}


def init_from(
    model: nn.Module, source: nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike
) -> list[str]:
    """Initialise ``model`` from a coarser trained FCN (staged training, section 4.2).

    Every parameter and buffer whose name exists in both is copied; the finer net's
    new layers (e.g. ``score_pool4``, ``upscore2``) keep their initialisation, zero
    for score layers, so the output right after this equals the source's.

    Args:
        model: the finer FCN, changed in place.
        source: the coarser FCN, its state_dict, or a file holding one (a checkpoint
            of ``fcnseg train``), which messages then name.

    Returns:
        The names of the tensors copied.

    Raises:
        WeightsError: the source predicts another number of classes, a shared
            tensor has another shape (another width), or it shares no backbone.
    """
    if isinstance(source, str | os.PathLike):
        name, state = str(source), read_state_dict(source)
    else:
        name = "the source"
        state = source.state_dict() if isinstance(source, nn.Module) else source
    own = model.state_dict()
    shared = [k for k in own if k in state]
    _check_classes(own, state, name)
    bad = [
        f"{k} (source {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in shared
        if own[k].shape != state[k].shape
    ]
    if bad:
        raise WeightsError(f"cannot init from {name}: shape mismatch for {', '.join(bad)}")
    if not any(k.startswith("features.") for k in shared):
        raise WeightsError(f"cannot init from {name}: it shares no backbone weights with the model")
    model.load_state_dict({k: state[k] for k in shared}, strict=False)
    return shared


def init_streams(
    model: nn.Module,
    sources: Mapping[str, nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike],
) -> None:
    """Initialise each stream of a late-fusion net from a trained one-stream FCN.

    The reference starts its colour + HHA net from its trained colour and HHA
    FCN-32s (its ``solve.py`` transplants each into its stream). Each stream is
    initialised by :func:`init_from`, whose messages name the source file.

    Args:
        model: a :class:`~fcnseg.nets.two_stream.TwoStreamFCN`, changed in place.
        sources: stream name -> its source (a net, its state_dict, or a checkpoint).

    Raises:
        ValueError: a name that is not one of the model's streams.
        WeightsError: as :func:`init_from`, for a source that does not fit its stream.
    """
    streams = getattr(model, "stream_names", ())
    unknown = sorted(set(sources) - set(streams))
    if unknown:
        raise ValueError(f"no stream {', '.join(unknown)}; the model's: {', '.join(streams)}")
    for name, source in sources.items():
        init_from(getattr(model, name), source)


def _check_classes(own: Mapping[str, torch.Tensor], state: Mapping, name: str) -> None:
    """Refuse a source whose score layer (``score_fr``: one output per class) predicts
    another number of classes than ``own``'s, naming both counts."""
    key = "score_fr.weight"
    if key not in own or key not in state:
        return
    theirs, ours = state[key].shape[0], own[key].shape[0]
    if theirs != ours:
        raise WeightsError(
            f"cannot init from {name}: it predicts {theirs} classes, the model {ours}; start "
            f"from a net trained on the same {ours} classes"
        )
