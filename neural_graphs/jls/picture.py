"""A labelled PNG of images side by side: one row per kind (the original, the INR's
render, each decoded view), one column per INR; grey or colour."""

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
    """Write ``rows`` (``(label, images in [0, 1])``, clipped) as a PNG grid at ``path``
    (atomically), each row's label on its left and ``title`` above: grey when every row is
    grey, in colour (RGB, grey rows repeated over the channels) when a row has 3 channels.

    Shapes:
        - each row's images: :math:`(n, H, W)` grey or :math:`(n, H, W, 3)` RGB, the same
          :math:`n, H, W` for every row
    """
    import cv2

    if not rows:
        raise ValueError("image_rows needs at least one row")
    shapes = {tuple(images.shape) for _, images in rows}
    if (len({shape[:3] for shape in shapes}) != 1
            or any(len(s) not in (3, 4) or (len(s) == 4 and s[3] != 3) for s in shapes)):
        raise ValueError(f"every row needs images [n, H, W] or [n, H, W, 3] of one n, H, W, "
                         f"got {sorted(shapes)}")
    count, height, width = next(iter(shapes))[:3]
    channels = 3 if any(len(shape) == 4 for shape in shapes) else 1
    gap = 2
    tiles = np.full((len(rows) * (height + gap) + gap, count * (width + gap) + gap, channels),
                    128, np.uint8)
    for r, (_, images) in enumerate(rows):
        pixels = images.detach().double().clamp(0, 1).mul(255).round().byte().cpu().numpy()
        if pixels.ndim == 3:
            pixels = pixels[..., None]
        top = gap + r * (height + gap)
        for c in range(count):
            left = gap + c * (width + gap)
            tiles[top:top + height, left:left + width] = pixels[c, ..., ::-1]  # RGB -> BGR
    tiles = cv2.resize(tiles, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    tiles = tiles.reshape(*tiles.shape[:2], channels)
    strip = 18 if title else 0
    canvas = np.full((tiles.shape[0] + strip, tiles.shape[1] + LABEL_WIDTH, channels), 255,
                     np.uint8)
    canvas[strip:, LABEL_WIDTH:] = tiles
    font, ink = cv2.FONT_HERSHEY_SIMPLEX, (0,) * channels
    for r, (label, _) in enumerate(rows):
        middle = strip + zoom * (gap + r * (height + gap) + height // 2) + 4
        cv2.putText(canvas, label[:14], (4, middle), font, 0.4, ink, 1, cv2.LINE_AA)
    if title:
        cv2.putText(canvas, title, (4, 13), font, 0.4, ink, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", canvas if channels == 3 else canvas[..., 0])
    if not ok:
        raise RuntimeError(f"cv2 could not encode the picture for {path}")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())
    return path
