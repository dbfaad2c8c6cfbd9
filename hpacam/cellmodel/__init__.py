"""Beyond the seed: a classifier that looks at one segmented cell at a time.

Trained on crops of every segmented training cell with its image's labels as weak labels (what
most top-10 solutions of the competition added), it gives each cell an absolute confidence that
is comparable across images, which no within-image reordering of CAM evidence can give.

    config   TrainCellConfig: the CAM stage's config plus `cells` (crops, pseudo-labels, segmentation)
    crops    one fixed-size crop per cell (4 stains + its mask) and the keyed on-disk crop cache
    pseudo   per-cell targets from image labels, lowered (never raised) by the CAM evidence
    data     crops as a dataset for the CAM stage's training loop
    train    the data builder that loop trains on; train_cell_model(cfg)
    predict  per-cell probabilities at inference, with flips
"""
