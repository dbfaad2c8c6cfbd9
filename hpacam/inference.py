"""Inference: test images in, Kaggle `submission.csv` out.

Per image, in two steps. `image_evidence`: segment (through the mask cache); run every CAM model
with test-time augmentation; per-cell intensities (the shared vectorised function) and three
kinds of cell evidence from them (per-image sigmoid, the model's regressor, the within-image
standing), averaged over CAM models; the Keras models' image probabilities. `combine`: the blend
settings make the image probability and each cell's confidence from that evidence, and border
cells are down-weighted. The split lets `hpacam.tuning` score many blends from one model pass
with the same arithmetic. Every cell's mask is encoded at the original size.

Images are streamed in chunks (only a chunk's Keras batch is held at once), models are loaded
once, and the submission is written atomically in the sample's order. A bad image is either
skipped (warning, empty prediction string) or fatal, by config.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpacam.cam.tta import TTAConfig
from hpacam.classes import CHANNELS, NUM_CLASSES
from hpacam.config import check_at_least, check_unit_interval
from hpacam.devices import check_device, resolve_device
from hpacam.images import (ImageReadError, ReadOptions, channel_path, check_header, check_image_id, id_file,
                           read_image)
from hpacam.masks import encode_label_image
from hpacam.regressor.calibration import (CalibrationRegressor, SigmoidCalibration, feature_frame, feature_matrix,
                                          load_regressor, sigmoid_calibrate)
from hpacam.regressor.intensities import Activation, cell_intensities
from hpacam.segmentation import SegmentationConfig, Segmenter
from hpacam.submission import COLUMNS, cells_prediction_string, read_submission, write_submission

log = logging.getLogger(__name__)


@dataclass
class CamModelEntry:
    checkpoint: Path = Path("data/cam/run/best.pt")
    regressor: Optional[Path] = None  # its calibration regressor (.npz); None: sigmoid only
    weight: float = 1.0

    def __post_init__(self):
        check_at_least(0.0, weight=self.weight)


@dataclass
class CellModelEntry:
    checkpoint: Path = Path("data/cell/run/last.pt")  # a cell-level classifier (train-cell-model)
    weight: float = 1.0

    def __post_init__(self):
        check_at_least(0.0, weight=self.weight)


@dataclass
class ImageModelEntry:
    model: Path = Path("data/img/run/best.keras")
    weight: float = 1.0
    color_mode: Optional[str] = None  # None: read from the config.yaml beside the model

    def __post_init__(self):
        check_at_least(0.0, weight=self.weight)


@dataclass
class BlendConfig:
    """How cell evidence and image-level probabilities make the final confidence.

    `gate` (default): final = p_image x (floor + (1 - floor) x p_cell). The image probability keeps
    the ranking across images (what the competition's broadcast baseline gets right), and the cell
    probability moves the cells of one image apart; `floor` says how far. `linear`:
    final = (1 - image_level_weight) x p_cell + image_level_weight x p_image.
    """

    sigmoid_weight: float = 0.5  # per-image sigmoid, regressor and within-image standing, by weight
    regressor_weight: float = 0.5
    standing_weight: float = 0.0
    mode: Literal["gate", "linear"] = "gate"
    floor: float = 0.8  # gate: the share of the image probability a cell keeps whatever its evidence
    image_level_weight: float = 0.3  # linear: weight of the image probability
    image_models_share: float = 0.5  # image probability = share x Keras models + rest x CAM models' logits
    # then (1 - cell_max_share) x that + cell_max_share x the image's highest per-cell regressor
    # probability (multiple-instance max pooling of the cell evidence); 0 without a regressor
    cell_max_share: float = 0.0
    # then (1 - cell_model_max_share) x that + cell_model_max_share x the image's highest cell-model
    # probability: the cell models as an image-level source; 0 without cell models
    cell_model_max_share: float = 0.0
    # final = (1 - share) x the CAM pipeline's confidence + share x the cell models' probability
    # (an absolute per-cell confidence, comparable across images) x image probability ** gate;
    # share 0: no cell models. gate 0 trusts the cell models alone, 1 lets the image say yes first.
    cell_model_share: float = 0.0
    cell_model_gate: float = 0.0
    border_factor: float = 1.0  # confidences of cells cut by the image border are multiplied by this
    min_confidence: float = 0.0  # triples below this are left out (smaller submissions)

    def __post_init__(self):
        check_unit_interval(sigmoid_weight=self.sigmoid_weight, regressor_weight=self.regressor_weight,
                            standing_weight=self.standing_weight, floor=self.floor,
                            image_level_weight=self.image_level_weight, image_models_share=self.image_models_share,
                            cell_max_share=self.cell_max_share, cell_model_max_share=self.cell_model_max_share,
                            cell_model_share=self.cell_model_share,
                            cell_model_gate=self.cell_model_gate, border_factor=self.border_factor,
                            min_confidence=self.min_confidence)


@dataclass
class InferenceConfig:
    cam_models: list[CamModelEntry] = field(default_factory=list)
    image_models: list[ImageModelEntry] = field(default_factory=list)
    cell_models: list[CellModelEntry] = field(default_factory=list)
    cell_model_flips: bool = True  # average each cell model over the four flips of every crop
    activation: Activation = "swish"
    tta: TTAConfig = field(default_factory=TTAConfig)
    sigmoid: SigmoidCalibration = field(default_factory=SigmoidCalibration)
    blend: BlendConfig = field(default_factory=BlendConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    cells_dir: Optional[Path] = None  # use these {ID}.png cell label images instead of segmenting (oracle runs)
    # ORACLE analysis only: these image labels (Kaggle CSV) replace the image probabilities in the
    # blend, to measure what the cell stage recovers given perfect image-level knowledge.
    oracle_image_labels: Optional[Path] = None
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    chunk_size: int = 16  # images read and predicted together by the Keras models
    keras_batch_size: int = 8
    on_bad_image: Literal["skip", "fail"] = "skip"
    read: ReadOptions = field(default_factory=ReadOptions)
    write_image_probs: bool = True  # <out>.image_probs.csv beside the submission (for baselines)
    visualise: int = 0  # write per-image PNGs for the first N images
    visualise_class: int = -1  # class map shown in the PNGs; -1: each image's top class

    def __post_init__(self):
        check_at_least(1, chunk_size=self.chunk_size, keras_batch_size=self.keras_batch_size)
        check_at_least(0, visualise=self.visualise)
        check_device("device", self.device)
        for name, entries in (("cam_models", self.cam_models), ("image_models", self.image_models),
                              ("cell_models", self.cell_models)):
            if entries and sum(entry.weight for entry in entries) <= 0:
                raise ValueError(f"{name}: the weights sum to 0; at least one model needs a positive weight")
        if not -1 <= self.visualise_class < NUM_CLASSES:
            raise ValueError(f"visualise_class must be -1 or 0..{NUM_CLASSES - 1}, got {self.visualise_class}")


# ----------------------------------------------------------------------------- the models, loaded once


@dataclass
class CalibratedCam:
    """A loaded CAM model with its calibration regressor (None: sigmoid only) and its weight in the blend."""

    cam: "object"  # hpacam.cam.loading.LoadedCamModel
    regressor: Optional[CalibrationRegressor]
    weight: float


@dataclass
class LoadedImageModel:
    """An image-level Keras model with the colour mode it reads and its weight in the blend."""

    model: "object"  # keras.Model
    color_mode: str
    weight: float
    path: str = ""


@dataclass
class LoadedModels:
    """Every model an inference config names, loaded once (`load_models`), and the device they run on."""

    cams: list[CalibratedCam]
    image_models: list[LoadedImageModel]
    device: str
    cell_models: list = field(default_factory=list)  # hpacam.cellmodel.predict.LoadedCellModel
    cell_model_weights: list[float] = field(default_factory=list)


def load_models(cfg: InferenceConfig) -> LoadedModels:
    """Every model once: CAM checkpoints (weights_only), regressors (code-free), Keras (safe mode)."""
    from hpacam.cam.loading import load_cam_models

    if not cfg.cam_models:
        raise ValueError("the inference config names no CAM models (cam_models: [{checkpoint: ...}])")
    device = resolve_device(cfg.device)
    cams = load_cam_models([entry.checkpoint for entry in cfg.cam_models], device)
    members = [CalibratedCam(cam, load_regressor(entry.regressor) if entry.regressor else None, entry.weight)
               for cam, entry in zip(cams, cfg.cam_models)]
    image_members = []
    if cfg.image_models:
        from hpacam.tf.predict import color_mode_of, load_image_model  # TensorFlow only when asked for

        for entry in cfg.image_models:
            mode = entry.color_mode or color_mode_of(str(entry.model))
            image_members.append(LoadedImageModel(load_image_model(str(entry.model)), mode, entry.weight,
                                                  str(entry.model)))
    cell_models = []
    if cfg.cell_models:
        from hpacam.cellmodel.predict import load_cell_models

        cell_models = load_cell_models([entry.checkpoint for entry in cfg.cell_models], device)
    return LoadedModels(members, image_members, device, cell_models, [entry.weight for entry in cfg.cell_models])


# ----------------------------------------------------------------------------- per-image scoring


@dataclass
class ImageResult:
    image_id: str
    width: int
    height: int
    prediction: str
    image_probs: np.ndarray  # (19,) the blended image-level probability
    sources: dict = field(default_factory=dict)  # source name -> (19,) image probabilities before blending
    cells: Optional[np.ndarray] = None  # kept only for the pictures
    cell_probs: Optional[np.ndarray] = None
    maps: Optional[np.ndarray] = None
    problem: str = ""  # why the image was skipped ("" when it was scored)


def weighted_mean(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError(f"blend weights {list(weights)} must sum to a positive number")
    return np.tensordot(weights / weights.sum(), np.stack(arrays), axes=1)


@dataclass
class ImageEvidence:
    """Everything the blend needs about one image, before any blend setting is applied.

    Kept apart from the blend so that `hpacam.tuning` can score many blend settings on a public
    set from one pass of the models, with exactly the arithmetic inference uses.
    """

    image_id: str
    width: int
    height: int
    masks: dict  # cell id -> encoded mask, in cell order
    cam_probs: np.ndarray  # (19,) the CAM models' own image probabilities (weighted mean)
    keras_probs: Optional[np.ndarray]  # (19,) the image-level models' blend, None without them
    keras_per_model: Optional[np.ndarray]  # (image models, 19)
    sigmoid: np.ndarray  # (cells, 19) per-image sigmoid of the intensities
    regressor: Optional[np.ndarray]  # (cells, 19) the learned mapping; None when no model has one
    standing: np.ndarray  # (cells, 19) each cell's CAM mean over the image's best cell, per class
    border: np.ndarray  # (cells,) bool
    cells: Optional[np.ndarray] = None  # label image, kept only for the pictures
    maps: Optional[np.ndarray] = None
    cell_model: Optional[np.ndarray] = None  # (cells, 19) the cell-level classifiers; None without them

    @property
    def n_cells(self) -> int:
        return len(self.masks)


def standing_within_image(means: np.ndarray) -> np.ndarray:
    """(cells, 19) mean class evidence of each cell over the strongest cell of its image, in [0, 1].

    The image probability already says whether (and how surely) a class is in the image; what a
    cell adds is how it compares with the image's other cells for that class. Dividing by the
    image's maximum per class makes that comparison independent of the image's brightness and of
    the CAM's scale, which vary between images, and needs no training. A class with no positive
    evidence in any cell gives every cell 1 (nothing tells its cells apart).
    """
    evidence = np.clip(np.asarray(means, dtype=np.float64), 0.0, None)
    top = evidence.max(axis=0, initial=0.0)
    return np.divide(evidence, top[None, :], out=np.ones_like(evidence), where=top[None, :] > 1e-12)


def regressor_probs(regressor: CalibrationRegressor, result, probs: np.ndarray, border: np.ndarray) -> np.ndarray:
    table = feature_frame(result, probs, border)
    return regressor.predict(feature_matrix(table, regressor.features)).reshape(len(result.cell_ids), NUM_CLASSES)


def image_evidence(image_id: str, folder: Path, models: LoadedModels, segmenter: Segmenter,
                   keras_per_model: Optional[np.ndarray], cfg: InferenceConfig,
                   keep_pictures: bool = False) -> ImageEvidence:
    """Segment one image and run every CAM model over it (raises ImageReadError for a bad image).

    `keras_per_model` is the (image models, 19) output of the image-level models for this image.
    """
    from hpacam.cam.tta import predict_activated_maps

    seg = precomputed_cells(cfg, image_id) if cfg.cells_dir else segmenter.segment_file(folder, image_id)
    height, width = seg.shape
    images = {mode: read_image(folder, image_id, mode, options=cfg.read) for mode in {m.cam.mode for m in models.cams}}
    border = seg.border.is_border if seg.n_cells else np.zeros(0, bool)
    cam_probs, sigmoids, standings, learned, learned_weights, maps_kept = [], [], [], [], [], None
    for member in models.cams:
        probs, activated, maps = predict_activated_maps(member.cam, images[member.cam.mode], cfg.tta,
                                                        cfg.activation, models.device)
        cam_probs.append(probs)
        maps_kept = maps if maps_kept is None else maps_kept
        if not seg.n_cells:
            continue
        result = cell_intensities(seg.cells, activated, probs)
        sigmoids.append(sigmoid_calibrate(result.sums, cfg.sigmoid))
        standings.append(standing_within_image(result.means))
        if member.regressor is not None:
            learned.append(regressor_probs(member.regressor, result, probs, border[result.cell_ids - 1]))
            learned_weights.append(member.weight)
    weights = [m.weight for m in models.cams]
    empty = np.zeros((0, NUM_CLASSES))
    masks = encode_label_image(seg.cells) if seg.n_cells else {}
    keras_probs = None
    if keras_per_model is not None:
        keras_probs = weighted_mean(list(keras_per_model), [m.weight for m in models.image_models])
    cell_model = None
    if models.cell_models:
        from hpacam.cellmodel.predict import cell_model_probs

        rgby = images["rgby"] if "rgby" in images else read_image(folder, image_id, "rgby", options=cfg.read)
        cell_model = cell_model_probs(models.cell_models, models.cell_model_weights, rgby, seg.cells,
                                      models.device, cfg.cell_model_flips)
    evidence = ImageEvidence(
        image_id, width, height, masks, weighted_mean(cam_probs, weights), keras_probs, keras_per_model,
        weighted_mean(sigmoids, weights) if sigmoids else empty,
        weighted_mean(learned, learned_weights) if learned else None,
        weighted_mean(standings, weights) if standings else empty, border,
        seg.cells if keep_pictures else None, maps_kept if keep_pictures else None, cell_model)
    check_finite(evidence)
    return evidence


class ModelOutputError(ValueError):
    """A model or regressor gave NaN or infinite values: a fault of the models, fatal for the run."""


EVIDENCE_SOURCES = {"cam_probs": "CAM models' image probabilities", "keras_probs": "image-level models",
                    "sigmoid": "per-image sigmoid of the CAM intensities", "regressor": "calibration regressors",
                    "standing": "within-image standing of the CAM intensities",
                    "cell_model": "cell-level classifiers"}


def check_finite(evidence: ImageEvidence) -> None:
    """Stop at NaN or infinite evidence, naming its source.

    NaN fails every `conf >= min_confidence` test, so it would leave the image's cells out of the
    submission without a word; a model that gives NaN once is broken for every image.
    """
    for name, source in EVIDENCE_SOURCES.items():
        values = getattr(evidence, name)
        if values is not None and not np.isfinite(values).all():
            raise ModelOutputError(f"{evidence.image_id}: the {source} gave NaN or infinite values; "
                                   "a model, regressor or setting is broken")


def cell_probabilities(evidence: ImageEvidence, blend: BlendConfig) -> np.ndarray:
    """(cells, 19): the per-image sigmoid, the regressor and the within-image standing, by weight.

    Without a regressor its weight falls to the sigmoid, as before regressors were fitted.
    """
    parts = [(evidence.sigmoid, blend.sigmoid_weight), (evidence.standing, blend.standing_weight)]
    if evidence.regressor is not None:
        parts.append((evidence.regressor, blend.regressor_weight))
    else:
        parts[0] = (evidence.sigmoid, blend.sigmoid_weight + blend.regressor_weight)
    parts = [(array, weight) for array, weight in parts if weight > 0]
    if not parts:
        return evidence.sigmoid
    return weighted_mean([array for array, _ in parts], [weight for _, weight in parts])


def blended_image_probs(evidence: ImageEvidence, blend: BlendConfig) -> np.ndarray:
    probs = evidence.cam_probs
    if evidence.keras_probs is not None:
        probs = (1 - blend.image_models_share) * probs + blend.image_models_share * evidence.keras_probs
    if blend.cell_max_share > 0 and evidence.regressor is not None and evidence.n_cells:
        probs = (1 - blend.cell_max_share) * probs + blend.cell_max_share * evidence.regressor.max(axis=0)
    if blend.cell_model_max_share > 0 and evidence.cell_model is not None and evidence.n_cells:
        share = blend.cell_model_max_share
        probs = (1 - share) * probs + share * evidence.cell_model.max(axis=0)
    return probs


def combine(evidence: ImageEvidence, blend: BlendConfig) -> tuple[np.ndarray, np.ndarray]:
    """(image probabilities (19,), final per-cell confidences (cells, 19)) under one blend setting."""
    image_probs = blended_image_probs(evidence, blend)
    if not evidence.n_cells:
        return image_probs, np.zeros((0, NUM_CLASSES))
    return image_probs, final_confidences(cell_probabilities(evidence, blend), image_probs, evidence.border, blend,
                                          evidence.cell_model)


def image_sources(evidence: ImageEvidence, models: LoadedModels, image_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Each image-level source by name (the CAM models' logits, each Keras model, the blend)."""
    sources = {"cam_models": evidence.cam_probs}
    if evidence.keras_per_model is not None:
        for member, probs in zip(models.image_models, evidence.keras_per_model):
            sources[f"image_model:{Path(member.path).parent.name}/{Path(member.path).name}"] = probs
    if evidence.regressor is not None and evidence.n_cells:
        sources["cells_max_regressor"] = evidence.regressor.max(axis=0)
    if evidence.cell_model is not None and evidence.n_cells:
        sources["cells_max_cell_model"] = evidence.cell_model.max(axis=0)
    sources["blend"] = image_probs
    return sources


def score_image(image_id: str, folder: Path, models: LoadedModels, segmenter: Segmenter,
                keras_per_model: Optional[np.ndarray], cfg: InferenceConfig, keep_pictures: bool = False,
                oracle_probs: Optional[np.ndarray] = None) -> ImageResult:
    """The prediction string of one image (raises ImageReadError for a bad image).

    `oracle_probs` (oracle analyses only) replaces the image probabilities in the blend.
    """
    evidence = image_evidence(image_id, folder, models, segmenter, keras_per_model, cfg, keep_pictures)
    return result_of(evidence, models, cfg.blend, oracle_probs, keep_pictures)


def with_oracle_labels(evidence: ImageEvidence, blend: BlendConfig,
                       labels: np.ndarray) -> tuple[ImageEvidence, BlendConfig]:
    """ORACLE analyses: the true image labels are the image probabilities, nothing blended into them.

    Nor overruled: the cell models' term is gated by the labels too, so a class the image lacks
    gets no confidence from any source (the row measures how the cells are ranked).
    """
    evidence = replace(evidence, cam_probs=np.asarray(labels, dtype=np.float64), keras_probs=None)
    return evidence, replace(blend, cell_max_share=0.0, cell_model_max_share=0.0, cell_model_gate=1.0)


def result_of(evidence: ImageEvidence, models: LoadedModels, blend: BlendConfig,
              oracle_probs: Optional[np.ndarray] = None, keep_pictures: bool = False) -> ImageResult:
    """An image's prediction string, image probabilities and sources from its evidence under `blend`."""
    sources = image_sources(evidence, models, blended_image_probs(evidence, blend))
    if oracle_probs is not None:
        evidence, blend = with_oracle_labels(evidence, blend, oracle_probs)
    image_probs, final = combine(evidence, blend)
    size = (evidence.image_id, evidence.width, evidence.height)
    if not evidence.n_cells:
        log.warning("%s: no cells found; empty prediction string", evidence.image_id)
        return ImageResult(*size, "", image_probs, sources)
    prediction = cells_prediction_string(evidence.masks, final, blend.min_confidence)
    if keep_pictures:
        return ImageResult(*size, prediction, image_probs, sources, evidence.cells, final, evidence.maps)
    return ImageResult(*size, prediction, image_probs, sources)


def precomputed_cells(cfg: InferenceConfig, image_id: str):
    """A segmentation from a given cell label image (e.g. the synthetic truth), with border flags."""
    from hpacam.segmentation.core import finish_segmentation
    from hpacam.images import read_label_png

    path = id_file(cfg.cells_dir, image_id)
    if not path.is_file():
        raise ImageReadError(f"{path}: no cell label image for this ID in cells_dir")
    cells = read_label_png(path)
    return finish_segmentation(cells, cells, cfg.segmentation, "precomputed")


def final_confidences(cells: np.ndarray, image_probs: np.ndarray, border: np.ndarray, blend: BlendConfig,
                      cell_model: Optional[np.ndarray] = None) -> np.ndarray:
    """Blend cell and image probabilities (see BlendConfig), mix in the cell models, down-weight border cells."""
    if blend.mode == "gate":
        final = image_probs[None, :] * (blend.floor + (1 - blend.floor) * cells)
    else:
        final = (1 - blend.image_level_weight) * cells + blend.image_level_weight * image_probs[None, :]
    if cell_model is not None and blend.cell_model_share > 0:
        gated = cell_model * image_probs[None, :] ** blend.cell_model_gate
        final = (1 - blend.cell_model_share) * final + blend.cell_model_share * gated
    final[border] *= blend.border_factor
    return np.clip(final, 0.0, 1.0)


# ----------------------------------------------------------------------------- streaming over a test set


def keras_chunk_probs(models: LoadedModels, ids: list[str], folder: Path,
                      cfg: InferenceConfig) -> tuple[dict[str, np.ndarray], dict[str, ImageReadError]]:
    """({ID: (image models, 19)} Keras probabilities of a chunk, {ID: why it could not be read}).

    The images are read by `read_image`, the CAM models' reader, at each model's size: the same
    formats (TIFF too, which tf.data cannot decode), the same limits and RGB policy, the same
    pixels. Only reading can fail per image; a model error ends the run.
    """
    if not models.image_models or not ids:
        return {}, {}
    from hpacam.tf.predict import predict_images

    inputs, problems = read_for_image_models(models, ids, folder, cfg)
    good = [image_id for image_id in ids if image_id not in problems]
    if not good:
        return {}, problems
    per_model = [predict_images(m.model, np.stack([inputs[(m.color_mode, m.model.input_shape[1])][i] for i in good]),
                                cfg.keras_batch_size, m.path) for m in models.image_models]
    return dict(zip(good, np.stack(per_model, axis=1))), problems  # (images, models, 19)


def read_for_image_models(models: LoadedModels, ids: list[str], folder: Path,
                          cfg: InferenceConfig) -> tuple[dict, dict[str, ImageReadError]]:
    """({(colour mode, size): {ID: image}}, {ID: problem}): each image once per mode and size the models need."""
    inputs: dict = {}
    problems: dict[str, ImageReadError] = {}
    for mode, size in dict.fromkeys((m.color_mode, m.model.input_shape[1]) for m in models.image_models):
        inputs[(mode, size)] = {}
        for image_id in ids:
            if image_id in problems:
                continue
            try:
                inputs[(mode, size)][image_id] = read_image(folder, image_id, mode, size, options=cfg.read)
            except ImageReadError as exc:
                problems[image_id] = exc
    return inputs, problems


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def shard_rows(sample: pd.DataFrame, shard: tuple[int, int]) -> pd.DataFrame:
    """Rows of shard i of n (interleaved, so every shard gets a mix of image sizes)."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    return sample.iloc[index::count]


def run_inference(cfg: InferenceConfig, images: Path, sample: pd.DataFrame, shard: tuple[int, int] = (0, 1),
                  picture_dir: Optional[Path] = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score every sample ID of the shard; returns (submission rows, image probabilities, per source)."""
    rows = shard_rows(sample, shard)
    check_cells_dir(cfg)
    oracle = oracle_labels(cfg, rows["ID"])
    models = load_models(cfg)
    segmenter = Segmenter(cfg.segmentation, read_options=cfg.read)  # limits hold before segmentation decodes
    sizes = dict(zip(rows["ID"], zip(rows["ImageWidth"].astype(int), rows["ImageHeight"].astype(int))))
    results: list[ImageResult] = []
    start = time.perf_counter()
    bar = tqdm(total=len(rows), desc="inference", unit="img")
    for image_id, problem, keras_probs in checked_inputs(models, rows["ID"].tolist(), images, cfg):
        results.append(score_or_skip(image_id, images, models, segmenter, keras_probs, sizes[image_id], cfg,
                                     keep=picture_dir is not None and len(results) < cfg.visualise,
                                     picture_dir=picture_dir, problem=problem, oracle_probs=oracle.get(image_id)))
        bar.update(1)
    bar.close()
    log.info("%d images in %.1f s (%.2f images/s)", len(results), time.perf_counter() - start,
             len(results) / max(time.perf_counter() - start, 1e-9))
    check_some_scored(results)
    return submission_frame(results, rows), probs_frame(results), sources_frame(results)


def check_cells_dir(cfg: InferenceConfig) -> None:
    """A `cells_dir` that is not a folder would fail every image one by one: say so once, first."""
    if cfg.cells_dir is not None and not cfg.cells_dir.is_dir():
        raise FileNotFoundError(f"cells_dir={cfg.cells_dir}: not a folder (it should hold {{ID}}.png cell label images)")


def check_some_scored(results: Sequence[ImageResult]) -> None:
    """A run in which every image failed has found a fault of its own (settings, models, the folder), not
    of the images: it ends with an error rather than an empty submission and status 0."""
    failed = [r for r in results if r.problem]
    if results and len(failed) == len(results):
        raise ValueError(f"every image failed ({len(failed)} of {len(results)}, none scored); "
                         f"the first, {failed[0].image_id}: {failed[0].problem}")


def checked_inputs(models: LoadedModels, ids: Sequence[str], folder: Path,
                   cfg: InferenceConfig) -> Iterator[tuple[str, Optional[ImageReadError], Optional[np.ndarray]]]:
    """(ID, its problem or None, its image-level models' (models, 19) output or None), chunk by chunk.

    Headers are checked once per chunk, before any reader decodes, and only the chunk's Keras
    batch is held at once. An image read for the image-level models that fails is a problem too.
    """
    for chunk in chunks(ids, cfg.chunk_size):
        problems = {image_id: header_problem(folder, image_id, cfg.read) for image_id in chunk}
        keras, unreadable = keras_chunk_probs(models, [i for i in chunk if problems[i] is None], folder, cfg)
        for image_id in chunk:
            yield image_id, problems[image_id] or unreadable.get(image_id), keras.get(image_id)


def oracle_labels(cfg: InferenceConfig, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """{ID: multi-hot labels} of `oracle_image_labels` (empty unless that oracle analysis is asked for)."""
    if cfg.oracle_image_labels is None:
        return {}
    from hpacam.labels import multi_hot, read_labels

    log.warning("ORACLE analysis: image probabilities replaced by the labels in %s", cfg.oracle_image_labels)
    table = read_labels(cfg.oracle_image_labels)
    found = dict(zip(table["ID"], multi_hot(table["labels"]).astype(np.float64)))
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"{cfg.oracle_image_labels}: no labels for {len(missing)} sample IDs, e.g. {missing[:3]}")
    return found


def header_problem(folder: Path, image_id: str, options: ReadOptions) -> Optional[ImageReadError]:
    """The first header problem (over the pixel limit, zero-byte, unreadable) among an image's channel files.

    Checked before any reader decodes: the Keras models' tf.data reader has no pixel limit of its
    own. A missing file is left to the reader that needs that channel. An ID that cannot be a file
    name (a path separator, too long) is the image's problem too.
    """
    try:
        check_image_id(image_id)
    except ImageReadError as exc:
        return exc
    for channel in CHANNELS:
        try:
            path = channel_path(folder, image_id, channel)
        except ImageReadError:
            continue
        try:
            check_header(path, options)
        except ImageReadError as exc:
            return exc
    return None


def score_or_skip(image_id: str, images: Path, models: LoadedModels, segmenter: Segmenter,
                  keras_probs: Optional[np.ndarray], size: tuple[int, int], cfg: InferenceConfig, keep: bool,
                  picture_dir: Optional[Path], problem: Optional[ImageReadError] = None,
                  oracle_probs: Optional[np.ndarray] = None) -> ImageResult:
    """Score one image; under `on_bad_image=skip` a bad image gets an empty prediction and a warning.

    `problem` and `keras_probs` are what `checked_inputs` found for the image. Only the image's own
    faults (ImageReadError: its files, their sizes, its ID) are a bad image. A SegmentationError is
    the segmentation backend failing (weights, package, settings, a bug): it would fail every image
    alike, so it ends the run at the first one, as any model or settings error does.
    """
    try:
        if problem is not None:
            raise problem
        result = score_image(image_id, images, models, segmenter, keras_probs, cfg, keep_pictures=keep,
                             oracle_probs=oracle_probs)
        if (result.width, result.height) != size:
            raise ImageReadError(f"{images / image_id}_*: image is {result.width}x{result.height} but the sample "
                                 f"submission says {size[0]}x{size[1]}")
    except ImageReadError as exc:  # only the image's own faults: others end the run
        if cfg.on_bad_image == "fail":
            raise
        log.warning("skipping %s: %s", image_id, exc)
        return ImageResult(image_id, size[0], size[1], "", np.full(NUM_CLASSES, np.nan, np.float32), problem=str(exc))
    if keep and picture_dir is not None:
        from hpacam.pictures import write_picture

        write_picture(id_file(picture_dir, image_id), images, result, cfg.visualise_class)
    return result


def submission_frame(results: list[ImageResult], rows: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame([(r.image_id, r.width, r.height, r.prediction) for r in results], columns=COLUMNS)
    return frame.set_index("ID").loc[rows["ID"]].reset_index()


def probs_frame(results: list[ImageResult]) -> pd.DataFrame:
    frame = pd.DataFrame(np.stack([r.image_probs for r in results]) if results else np.zeros((0, NUM_CLASSES)),
                         columns=[str(c) for c in range(NUM_CLASSES)])
    frame.insert(0, "ID", [r.image_id for r in results])
    return frame


def sources_frame(results: list[ImageResult]) -> pd.DataFrame:
    """Long table (ID, source, 0..18): each image-level source before the blend, for reports."""
    rows = [(r.image_id, name, *np.asarray(probs, dtype=np.float64)) for r in results for name, probs in r.sources.items()]
    return pd.DataFrame(rows, columns=["ID", "source", *[str(c) for c in range(NUM_CLASSES)]])


def read_sample(path: Path) -> pd.DataFrame:
    """The sample submission: IDs and sizes, in the order the output must keep."""
    return read_submission(path)


def merge_shards(sample_path: Path, parts: Sequence[Path], out: Path) -> pd.DataFrame:
    """Join shard submissions into one, in the sample's order; every ID exactly once."""
    from hpacam.evaluate import check_prediction_strings

    sample = read_sample(sample_path)
    frames = [read_submission(p) for p in parts]
    for path, frame in zip(parts, frames):  # a malformed shard must not pass into the merged file
        check_prediction_strings(frame, str(path))
    merged = pd.concat(frames, ignore_index=True)
    dupes = merged.loc[merged["ID"].duplicated(), "ID"].tolist()
    if dupes:
        raise ValueError(f"IDs in more than one shard: {dupes[:5]}")
    missing = sorted(set(sample["ID"]) - set(merged["ID"]))
    if missing:
        raise ValueError(f"{len(missing)} sample IDs are in no shard, e.g. {missing[:5]}")
    extra = sorted(set(merged["ID"]) - set(sample["ID"]))
    if extra:
        raise ValueError(f"shards hold IDs that are not in {sample_path}: {extra[:5]}")
    result = merged.set_index("ID").loc[sample["ID"]].reset_index()[COLUMNS]
    write_submission(result, out)
    return result
