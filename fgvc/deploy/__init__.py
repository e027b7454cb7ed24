"""Deployment: export bundles (weights, ``model.json``, verified ONNX / TorchScript), load
them back, and predict image files.

    export.py     checkpoint -> bundle (verify.py, exporters.py, publish.py)
    bundle.py     model.json, Bundle, load
    predict.py    predictors (ONNX Runtime / PyTorch) and predict_files; outputs.py
    explain.py    Grad-CAM maps of a bundle's predictions; overlays.py draws and writes them
    serve/        fgvc serve: the bundle behind HTTP (LitServe) with a web page
"""

from fgvc.deploy.bundle import Bundle, load

__all__ = ["Bundle", "load"]
