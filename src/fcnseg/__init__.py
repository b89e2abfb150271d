"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer, Darrell)."""

from fcnseg.convolutionalize import convolutionalize
from fcnseg.fcn import FCN
from fcnseg.geometry import CoordMap, coord_map, crop_offset
from fcnseg.models import ModelConfig, build_from_config, build_model, list_models
from fcnseg.surgery import WeightsError, init_from
from fcnseg.upsample import Upsample, bilinear_kernel

__version__ = "0.1.0"

__all__ = [
    "FCN",
    "CoordMap",
    "ModelConfig",
    "Upsample",
    "WeightsError",
    "bilinear_kernel",
    "build_from_config",
    "build_model",
    "convolutionalize",
    "coord_map",
    "crop_offset",
    "init_from",
    "list_models",
]
