"""Learning an image space from INR weights (SPEC 4.4; ``python -m MNIST_INR2JLS_Train``).

* INR2JLS (:mod:`neural_graphs.jls.models`): :class:`JLSAutoencoder` (weight-space encoder,
  :class:`LatentGenerator`, :class:`ConvDecoder`) draws the six views of an INR's image
  (:class:`SixViews`) from its weights; :class:`JLSClassifier` freezes encoder and latent
  generator and classifies the latent maps (:class:`ViewClassifier`, view logits summed).
* INR-INR (:mod:`neural_graphs.jls.inr2inr`): :class:`INR2INR` decodes a whole SIREN from
  the latent (:class:`SirenDecoder`) and renders it; :class:`LatentMLP` classifies the
  latent.
* Tasks of each stage (:mod:`neural_graphs.jls.tasks`) and a picture of reconstructions
  (:func:`image_rows`).
"""

from neural_graphs.jls.inr2inr import INR2INR, DecodedINR, SirenDecoder
from neural_graphs.jls.models import (
    VIEW_NAMES,
    ConvDecoder,
    JLSAutoencoder,
    JLSClassifier,
    LatentGenerator,
    LatentMLP,
    SixViews,
    ViewClassifier,
    graph_features,
)
from neural_graphs.jls.picture import image_rows
from neural_graphs.jls.tasks import (
    channels_first,
    inr2inr_task,
    reconstruction_task,
    view_classification_task,
)

__all__ = [
    "INR2INR",
    "VIEW_NAMES",
    "ConvDecoder",
    "DecodedINR",
    "JLSAutoencoder",
    "JLSClassifier",
    "LatentGenerator",
    "LatentMLP",
    "SirenDecoder",
    "SixViews",
    "ViewClassifier",
    "channels_first",
    "graph_features",
    "image_rows",
    "inr2inr_task",
    "reconstruction_task",
    "view_classification_task",
]
