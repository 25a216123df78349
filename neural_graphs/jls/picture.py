"""A labelled PNG of images side by side: one row per kind (the original, the INR's
render, each decoded view), one column per INR."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from utils.atomic import atomic_write

__all__ = ["image_rows"]

LABEL_WIDTH = 96


def image_rows(rows: Sequence[tuple[str, Tensor]], path: str | Path, zoom: int = 3,
               title: str = "") -> Path:
    """Write ``rows`` (``(label, images [n, H, W] in [0, 1])``, clipped) as a grey PNG grid
    at ``path`` (atomically), each row's label on its left and ``title`` above.

    Shapes:
        - each row's images: :math:`(n, H, W)`, the same :math:`n, H, W` for every row
    """
    import cv2

    if not rows:
        raise ValueError("image_rows needs at least one row")
    shapes = {tuple(images.shape) for _, images in rows}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"every row needs images [n, H, W] of one shape, got {sorted(shapes)}")
    count, height, width = next(iter(shapes))
    gap = 2
    tiles = np.full((len(rows) * (height + gap) + gap, count * (width + gap) + gap), 128,
                    np.uint8)
    for r, (_, images) in enumerate(rows):
        pixels = images.detach().double().clamp(0, 1).mul(255).round().byte().cpu().numpy()
        top = gap + r * (height + gap)
        for c in range(count):
            left = gap + c * (width + gap)
            tiles[top:top + height, left:left + width] = pixels[c]
    tiles = cv2.resize(tiles, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    strip = 18 if title else 0
    canvas = np.full((tiles.shape[0] + strip, tiles.shape[1] + LABEL_WIDTH), 255, np.uint8)
    canvas[strip:, LABEL_WIDTH:] = tiles
    font = cv2.FONT_HERSHEY_SIMPLEX
    for r, (label, _) in enumerate(rows):
        middle = strip + zoom * (gap + r * (height + gap) + height // 2) + 4
        cv2.putText(canvas, label[:14], (4, middle), font, 0.4, 0, 1, cv2.LINE_AA)
    if title:
        cv2.putText(canvas, title, (4, 13), font, 0.4, 0, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"cv2 could not encode the picture for {path}")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())
    return path
