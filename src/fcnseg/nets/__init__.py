"""The paper (sections 3-4): convolutionalization, upsampling, geometry, backbones, FCNs."""

from fcnseg.nets.conv_matrix import conv_matrix

__all__ = ["conv_matrix"]
