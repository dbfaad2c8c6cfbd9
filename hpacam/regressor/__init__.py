"""Stage 3: the gradient-boosting regressor that turns per-cell CAM intensities into probabilities.

Its parts import numpy, pandas and OpenCV only (no torch at import time), so inference and the cell model
can use the per-cell intensities and the calibration without the stage's training code.

    intensities  per-cell CAM intensities of one image (shared by this stage, the cell model and inference)
    calibration  the per-image sigmoid, the regressor's feature table (`feature_frame`) and its
                 code-free tree-ensemble file format
    extraction   extract_intensities.py: CAM intensities of labelled images as a tidy CSV
    train        train_grad_boost.py: one regressor per CAM model on that CSV, with a held-out report
"""
