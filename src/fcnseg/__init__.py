"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer, Darrell).

The package reads like the paper and the tools around it: ``nets`` (the FCNs,
sections 3-4), ``data`` (datasets and transforms), ``train`` (loss, metrics,
the engine), ``deploy`` (inference and export), then the ``fcnseg`` command.
"""

from fcnseg.data.info import IGNORE_INDEX, DataError
from fcnseg.data.registry import build_dataset
from fcnseg.deploy.inference import Segmenter
from fcnseg.errors import FcnsegWarning, UserError
from fcnseg.nets.convolutionalize import convolutionalize
from fcnseg.nets.fcn import FCN
from fcnseg.nets.geometry import CoordMap, coord_map, crop_offset
from fcnseg.nets.registry import ModelConfig, build_from_config, build_model, list_models
from fcnseg.nets.surgery import init_from
from fcnseg.nets.upsample import Upsample, bilinear_kernel
from fcnseg.nets.weights import WeightsError
from fcnseg.train.metrics import ConfusionMatrix

__version__ = "0.1.0"

__all__ = [
    "FCN",
    "IGNORE_INDEX",
    "ConfusionMatrix",
    "CoordMap",
    "DataError",
    "FcnsegWarning",
    "ModelConfig",
    "Segmenter",
    "Upsample",
    "UserError",
    "WeightsError",
    "bilinear_kernel",
    "build_dataset",
    "build_from_config",
    "build_model",
    "convolutionalize",
    "coord_map",
    "crop_offset",
    "init_from",
    "list_models",
]
