"""Deployment: export bundles (weights, ``model.json``, verified ONNX / pt2 / ...), load
them back, and predict image files.

    formats/      one record per export format (write, load to logits, tolerance)
    export.py     checkpoint -> bundle (formats/, verify.py, publish.py)
    bundle.py     model.json, Bundle, load
    predict.py    predictors (any format of formats/) and predict_files; outputs.py
    explain.py    Grad-CAM maps of a bundle's predictions; overlays.py draws and writes them
    classifier.py fgvc.load: a bundle, checkpoint or run as an object that predicts and explains
    finish.py     what a fit ends with (export, Grad-CAM, summary), for fgvc fit and notebooks
    serve/        fgvc serve: the bundle behind HTTP (LitServe) with a web page
"""

from fgvc.deploy.bundle import Bundle, load

__all__ = ["Bundle", "load"]
