"""`facedeblur evaluate`: how much our restorer helps on held-out faces, next to what a user could do instead.

Runs on a runtime install (onnxruntime, OpenCV, scikit-image); never imports PyTorch.
"""
