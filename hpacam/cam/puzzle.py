"""The Puzzle-CAM objective (Jo & Yu 2021): a CAM should not depend on how much context it sees.

The image and its tiles go through the same classifier; the tiles' class maps, put back
together, must match the full image's maps (reconstruction loss) and classify the image on their
own (puzzle classification loss). A plain CAM only needs the most discriminative patch to be
right; a tile without that patch still has to find evidence, so Puzzle-CAM maps spread over
every cell that carries the label, which is what the per-cell scores need.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpacam.cam.config import LossConfig
from hpacam.cam.losses import focal_bce_with_logits


def pieces_per_side(num_pieces: int) -> int:
    side = math.isqrt(num_pieces)
    if side * side != num_pieces or side < 1:
        raise ValueError(f"num_pieces must be a square (1, 4, 9, ...), got {num_pieces}")
    return side


def tile_features(images: torch.Tensor, num_pieces: int) -> torch.Tensor:
    """(B, C, H, W) -> (num_pieces * B, C, H / n, W / n), tiles in row-major order, batch inner.

    Tile t of image b sits at index t * B + b, so `merge_features` can undo it with plain splits.
    """
    side = pieces_per_side(num_pieces)
    height, width = images.shape[-2:]
    if height % side or width % side:
        raise ValueError(f"a {height}x{width} input cannot be cut into {side}x{side} equal tiles")
    rows = images.split(height // side, dim=2)
    return torch.cat([tile for row in rows for tile in row.split(width // side, dim=3)], dim=0)


def merge_features(tiles: torch.Tensor, num_pieces: int, batch_size: int) -> torch.Tensor:
    """Inverse of `tile_features`: (num_pieces * B, C, h, w) -> (B, C, n * h, n * w)."""
    side = pieces_per_side(num_pieces)
    if tiles.shape[0] != num_pieces * batch_size:
        raise ValueError(f"expected {num_pieces} x {batch_size} tiles, got {tiles.shape[0]}")
    pieces = tiles.split(batch_size, dim=0)
    rows = [torch.cat(pieces[r * side:(r + 1) * side], dim=3) for r in range(side)]
    return torch.cat(rows, dim=2)


class PuzzleNet(nn.Module):
    """The training view of a classifier: one forward pass computes everything the loss needs.

    Keeping the full-image and the tile passes inside one module call means DistributedDataParallel
    sees one forward per backward, as it expects.
    """

    def __init__(self, model: nn.Module, num_pieces: int = 4, puzzle: bool = True):
        super().__init__()
        self.model = model
        self.num_pieces = num_pieces
        self.puzzle = puzzle

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, cams = self.model(images, with_cam=True)
        out = {"logits": logits, "cams": cams}
        if self.puzzle:
            _, tile_cams = self.model(tile_features(images, self.num_pieces), with_cam=True)
            merged = merge_features(tile_cams, self.num_pieces, images.shape[0])
            if merged.shape != cams.shape:
                raise ValueError(
                    f"re-assembled tile maps {tuple(merged.shape[-2:])} differ from the full maps "
                    f"{tuple(cams.shape[-2:])}: the input size must be a multiple of output stride x "
                    f"{pieces_per_side(self.num_pieces)}")
            out["merged_cams"] = merged
        return out


def alpha_at(step: int, total_steps: int, cfg: LossConfig) -> float:
    """Reconstruction weight: linear from 0 to `cfg.alpha` over `alpha_schedule` of training.

    Early on the maps are noise; forcing tiles to agree with them would only slow classification.
    """
    if cfg.alpha_schedule <= 0:
        return cfg.alpha
    ramp_steps = max(1.0, total_steps * cfg.alpha_schedule)
    return min(cfg.alpha * step / ramp_steps, cfg.alpha)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    loss = focal_bce_with_logits(logits, targets, cfg.focal_gamma, cfg.label_smoothing)
    return loss.sum(dim=1).mean() if cfg.class_reduction == "sum" else loss.mean()


def puzzle_cam_loss(outputs: dict[str, torch.Tensor], targets: torch.Tensor, cfg: LossConfig,
                    alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms: class + puzzle class + alpha * L1 reconstruction.

    With `reconstruction="masking"` only the classes present in the image are reconstructed:
    the maps of absent classes should be flat and carry no information worth matching.
    """
    class_loss = classification_loss(outputs["logits"], targets, cfg)
    terms = {"class": class_loss}
    total = class_loss
    merged = outputs.get("merged_cams")
    if cfg.mode == "puzzle" and merged is not None:
        cams = outputs["cams"].float()
        merged = merged.float()
        if cfg.puzzle_class_loss:
            terms["puzzle_class"] = classification_loss(merged.mean(dim=(2, 3)), targets, cfg)
            total = total + terms["puzzle_class"]
        difference = (cams - merged).abs()
        if cfg.reconstruction == "masking":
            difference = difference * targets[:, :, None, None].to(difference.dtype)
        terms["reconstruction"] = difference.mean()
        total = total + alpha * terms["reconstruction"]
    terms_out = {name: float(value.detach()) for name, value in terms.items()}
    terms_out["alpha"] = float(alpha)
    return total, terms_out
