"""The registry of the reference's trained nets: each entry consistent with the reference and
with fcnseg's models and datasets; a name downloads once through torch.hub and converts."""

import pytest
import torch

import fcnseg
from fcnseg.data.registry import DATASETS
from fcnseg.nets.reference_weights import REFERENCE_WEIGHTS, fetch_caffemodel
from fcnseg.nets.weights import NORMALIZATIONS, WeightsError
from tests.conftest import randomize_scores
from tests.nets.caffe_writer import write_caffemodel
from tests.nets.test_caffe_convert import assert_same_logits, caffe_layers

# The reference repository's <name>/caffemodel-url files (nyud-fcn32s-color-d has none).
CAFFEMODEL_URLS = {
    "voc-fcn32s": "http://dl.caffe.berkeleyvision.org/fcn32s-heavy-pascal.caffemodel",
    "voc-fcn16s": "http://dl.caffe.berkeleyvision.org/fcn16s-heavy-pascal.caffemodel",
    "voc-fcn8s": "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
    "voc-fcn8s-atonce": "http://dl.caffe.berkeleyvision.org/fcn8s-atonce-pascal.caffemodel",
    "voc-fcn-alexnet": "http://dl.caffe.berkeleyvision.org/fcn-alexnet-pascal.caffemodel",
    "pascalcontext-fcn32s": "http://dl.caffe.berkeleyvision.org/pascalcontext-fcn32s-heavy.caffemodel",
    "pascalcontext-fcn16s": "http://dl.caffe.berkeleyvision.org/pascalcontext-fcn16s-heavy.caffemodel",
    "pascalcontext-fcn8s": "http://dl.caffe.berkeleyvision.org/pascalcontext-fcn8s-heavy.caffemodel",
    "nyud-fcn32s-color": "http://dl.caffe.berkeleyvision.org/nyud-fcn32s-color-heavy.caffemodel",
    "nyud-fcn32s-hha": "http://dl.caffe.berkeleyvision.org/nyud-fcn32s-hha-heavy.caffemodel",
    "nyud-fcn32s-color-d": None,
    "nyud-fcn32s-color-hha": "http://dl.caffe.berkeleyvision.org/nyud-fcn32s-color-hha-heavy.caffemodel",
    "siftflow-fcn32s": "http://dl.caffe.berkeleyvision.org/siftflow-fcn32s-heavy.caffemodel",
    "siftflow-fcn16s": "http://dl.caffe.berkeleyvision.org/siftflow-fcn16s-heavy.caffemodel",
    "siftflow-fcn8s": "http://dl.caffe.berkeleyvision.org/siftflow-fcn8s-heavy.caffemodel",
}  # fmt: skip


def test_urls_are_the_references():
    assert {name: w.url for name, w in REFERENCE_WEIGHTS.items()} == CAFFEMODEL_URLS


@pytest.mark.parametrize("name", REFERENCE_WEIGHTS)
def test_entry_fits_a_registered_model_and_dataset(name):
    entry = REFERENCE_WEIGHTS[name]
    assert entry.model in fcnseg.list_models()
    assert entry.normalization in NORMALIZATIONS
    assert DATASETS[entry.dataset].info.num_classes == entry.num_classes
    for split, values in entry.metrics.items():
        assert split and values and all(0 < v < 1 for v in values.values()), split
    assert entry.reported or not entry.metrics  # every number says where it comes from


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch.hub's cache in a temp folder; downloads copy the files in ``served``."""
    served, downloads = {}, []

    def download(url, dst, hash_prefix=None, progress=True):
        downloads.append(url)
        with open(dst, "wb") as f:
            f.write(served[url])

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return served, downloads


def test_build_model_with_a_weights_name(hub, tmp_path):
    served, downloads = hub
    torch.manual_seed(0)
    source = randomize_scores(fcnseg.build_model("fcn16s", 21, width=0.0625)).eval()
    path = tmp_path / "fcn16s.caffemodel"
    write_caffemodel(path, caffe_layers("fcn16s", source))
    url = REFERENCE_WEIGHTS["voc-fcn16s"].url
    served[url] = path.read_bytes()
    for _ in range(2):
        model = fcnseg.build_model("fcn16s", weights="voc-fcn16s", width=0.0625)
        assert model.config.num_classes == 21
        assert_same_logits(model, source)
    assert downloads == [url]  # once: then torch.hub's cache
    cached = tmp_path / "hub" / "checkpoints" / "fcn16s-heavy-pascal.caffemodel"
    assert fetch_caffemodel("voc-fcn16s") == cached and cached.read_bytes() == served[url]


def test_a_name_for_another_model_or_without_a_file(hub):
    with pytest.raises(WeightsError, match="weights voc-fcn8s fit model fcn8s, not fcn32s"):
        fcnseg.build_model("fcn32s", weights="voc-fcn8s")
    with pytest.raises(WeightsError, match="publishes no caffemodel for nyud-fcn32s-color-d"):
        fcnseg.build_model("fcn32s-color-d", weights="nyud-fcn32s-color-d")
    assert hub[1] == []  # nothing downloaded


def test_a_file_named_like_an_entry_is_read_as_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "voc-fcn8s").write_bytes(b"not a caffemodel")
    with pytest.raises(WeightsError, match="voc-fcn8s: not a"):
        fcnseg.build_model("fcn8s", weights="voc-fcn8s")
