"""The paper (sections 3-4): convolutionalization, upsampling, geometry, backbones, FCNs."""
