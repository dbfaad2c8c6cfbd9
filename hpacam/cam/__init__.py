"""Stage 1: Puzzle-CAM classifiers whose class activation maps find the cells carrying each label.

Its modules import torch at the top, so only a stage that needs torch imports them: `import
hpacam` and the config modules (`hpacam.cam.config`) stay light, and scripts check a config
before paying for the torch import. torch is also imported by `hpacam.cellmodel`,
`hpacam.segmentation.hpa` and, inside the functions that need it, `hpacam.inference`.

    models       create_model(...) -> CamClassifier, backbones, 4-channel stems, parameter groups
    puzzle       tile_features / merge_features and the Puzzle-CAM objective
    losses       focal BCE with label smoothing
    data         datasets, microscopy augmentations, resumable samplers
    metrics      per-class ROC-AUC and F1 at several thresholds
    checkpoint   self-describing checkpoints, save_checkpoint / load_cam_model
    loading      load_cam_models: trained models with their training size and colour mode (later stages)
    train        the training loop (TrainCamConfig, train)
    localisation how well CAMs pick out the truth cells of the synthetic benchmark
    tta          class maps with test-time augmentation (the regressor and inference stages' module)
"""
