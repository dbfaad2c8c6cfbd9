"""Stage 1: Puzzle-CAM classifiers whose class activation maps find the cells carrying each label.

Everything that imports torch lives in this subpackage, so `import hpacam` stays light.

    models       create_model(...) -> CamClassifier, backbones, 4-channel stems, parameter groups
    puzzle       tile_features / merge_features and the Puzzle-CAM objective
    losses       focal BCE with label smoothing
    data         datasets, microscopy augmentations, resumable samplers
    metrics      per-class ROC-AUC and F1 at several thresholds
    checkpoint   self-describing checkpoints, save_checkpoint / load_cam_model
    train        the training loop (TrainCamConfig, train)
    localisation how well CAMs pick out the truth cells of the synthetic benchmark
    tta          class maps with test-time augmentation (the regressor and inference stages' module)
"""
