"""Deployment: Segmenter (inference on images of any size) and ONNX export."""
