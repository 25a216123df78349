"""INR-INR (SPEC 4.4): an INR's weights to a latent vector and back to a whole SIREN.

:class:`INR2INR` reads a batch of SIREN graphs with a weight-space encoder, maps the graph
features to a latent (:class:`~neural_graphs.jls.models.LatentGenerator`, one token by
default) and decodes every weight and bias of a new SIREN of the same architecture
(:class:`SirenDecoder`), which it renders. Classification then reads the frozen latent
(:class:`~neural_graphs.jls.models.JLSClassifier` with a
:class:`~neural_graphs.jls.models.LatentMLP`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from neural_graphs.inr import render
from neural_graphs.inr_data import graph_features_to_stacked
from neural_graphs.jls.models import Graphs, LatentGenerator, graph_features

__all__ = ["DecodedINR", "INR2INR", "SirenDecoder", "batch_layout", "graph_parameters",
           "siren_parameters"]


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_features))


class SirenDecoder(nn.Module):
    r"""Every weight and bias of a network from a latent vector :math:`z`, by two MLPs
    (the official ``HyperNetwork`` pair, ``Linear(L, h) -> ReLU -> Linear(h, h) -> ReLU ->
    Linear(h, n)``), scaled to the training INRs' statistics:

    .. math::
        w = \mu_w + \sigma_w \odot \text{MLP}_w(z), \qquad
        b = \mu_b + \sigma_b \odot \text{MLP}_b(z)

    with :math:`\mu, \sigma` the per-parameter mean and standard deviation of the
    training INRs (buffers, :meth:`set_statistics`; 0 and 1 until set, the official
    decoder). SIREN weights are of order :math:`10^{-2}` and read through
    :math:`\sin(30\,\cdot)`: unscaled, a fresh decoder draws noise.

    Args:
        in_features (int): width :math:`L` of the latent vector.
        num_weights (int): weights of the network (edges of its graph).
        num_biases (int): biases (non-input neurons).
        hidden (int): MLP width (512).

    Shapes:
        - input: :math:`(B, L)`
        - output: ``(weights [B, num_weights], biases [B, num_biases])``
    """

    def __init__(self, in_features: int, num_weights: int, num_biases: int,
                 hidden: int = 512) -> None:
        super().__init__()
        self.weights = _mlp(in_features, hidden, num_weights)
        self.biases = _mlp(in_features, hidden, num_biases)
        self.register_buffer("weight_mean", torch.zeros(num_weights))
        self.register_buffer("weight_std", torch.ones(num_weights))
        self.register_buffer("bias_mean", torch.zeros(num_biases))
        self.register_buffer("bias_std", torch.ones(num_biases))

    @torch.no_grad()
    def set_statistics(self, weights: Tensor, biases: Tensor) -> None:
        """:math:`\\mu, \\sigma` of ``weights`` ``[n, num_weights]`` and ``biases``
        ``[n, num_biases]`` (standard deviations below 1e-8 count as 1e-8)."""
        for name, values in (("weight", weights), ("bias", biases)):
            mean = getattr(self, f"{name}_mean")
            if values.dim() != 2 or values.shape[1] != mean.shape[0]:
                raise ValueError(f"{name} statistics need [n, {mean.shape[0]}], got "
                                 f"{tuple(values.shape)}")
            mean.copy_(values.mean(0))
            std = values.std(0) if values.shape[0] > 1 else torch.ones_like(mean)
            getattr(self, f"{name}_std").copy_(std.clamp(min=1e-8))

    def forward(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.weight_mean + self.weight_std * self.weights(latent)
        biases = self.bias_mean + self.bias_std * self.biases(latent)
        return weights, biases


class DecodedINR(NamedTuple):
    """What :class:`INR2INR` returns: the decoded SIRENs' renders ``[B, H, W]`` and their
    parameters as graph features (``weights`` ``[B, E]`` in edge order, ``biases``
    ``[B, N - n_in]`` in node order without the input neurons)."""

    image: Tensor
    weights: Tensor
    biases: Tensor


def batch_layout(batch: Batch) -> list[int]:
    """Neurons per layer of a batch whose graphs are all one architecture in template
    order; ``ValueError`` otherwise."""
    layouts = batch.layer_layout if isinstance(batch.layer_layout[0], list) else \
        [batch.layer_layout]
    layout = [int(n) for n in layouts[0]]
    nodes, graphs = sum(layout), batch.num_graphs
    edges = sum(a * b for a, b in zip(layout[:-1], layout[1:]))
    if any([int(n) for n in other] != layout for other in layouts) or \
            batch.num_nodes != graphs * nodes or batch.edge_index.shape[1] != graphs * edges:
        raise ValueError("INR-INR needs a batch of graphs of one architecture")
    return layout


def graph_parameters(batch: Batch) -> tuple[Tensor, Tensor]:
    """The batch's own weights ``[B, E]`` and non-input biases ``[B, N - n_in]``, in the
    order :class:`DecodedINR` gives the decoded ones."""
    layout = batch_layout(batch)
    graphs = batch.num_graphs
    weights = batch.edge_attr[:, 0].reshape(graphs, -1)
    biases = batch.x[:, 0].reshape(graphs, -1)[:, layout[0]:]
    return weights, biases


def siren_parameters(weights: Tensor, biases: Tensor,
                     layout: Sequence[int]) -> dict[str, Tensor]:
    """Stacked SIREN parameters (``{"net.0.weight": [B, out, in], ...}``) of flat weights
    ``[B, E]`` and non-input biases ``[B, N - n_in]`` in graph order
    (:func:`graph_parameters`, :class:`DecodedINR`)."""
    x = torch.cat([biases.new_zeros(biases.shape[0], int(layout[0])), biases], 1)
    return graph_features_to_stacked(x, weights, layout)


class INR2INR(nn.Module):
    r"""INR-INR: :math:`\theta' = \text{decoder}(\text{latent}(f(G)))`, a SIREN of the
    input's architecture decoded from the input's weights, and its render
    :math:`f_{\theta'}(\text{grid})`.

    Args:
        encoder (nn.Module): a weight-space encoder (:func:`~neural_graphs.jls.models.
            graph_features`).
        latent (LatentGenerator): graph features to the latent (1 view, 1 token: the
            paper's 256-d vector).
        decoder (SirenDecoder): the flattened latent to weights and biases.
        layout (sequence): neurons per layer of the SIRENs (``[2, 32, 32, 1]``).
        size (tuple): rendered image size.
        omega_0, out_offset (float): the SIRENs' sine frequency and output offset.

    Shapes:
        - input: a batch of ``B`` SIREN graphs of ``layout``
        - output: :class:`DecodedINR`
    """

    def __init__(self, encoder: nn.Module, latent: LatentGenerator, decoder: SirenDecoder,
                 layout: Sequence[int], size: tuple[int, int] = (28, 28),
                 omega_0: float = 30.0, out_offset: float = 0.5) -> None:
        super().__init__()
        self.encoder, self.latent, self.decoder = encoder, latent, decoder
        self.layout = [int(n) for n in layout]
        self.size, self.omega_0, self.out_offset = tuple(size), float(omega_0), float(out_offset)

    def encode(self, graphs: Graphs) -> Tensor:
        """The latent, :math:`(B, V, D, s, s)`."""
        return self.latent(graph_features(self.encoder, graphs))

    def decode(self, latent: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Stacked SIREN parameters, and the flat weights and biases, of latents."""
        weights, biases = self.decoder(latent.flatten(1))
        return siren_parameters(weights, biases, self.layout), weights, biases

    def render(self, params: dict[str, Tensor]) -> Tensor:
        return render(params, self.size, omega_0=self.omega_0, out_offset=self.out_offset)

    def forward(self, graphs: Graphs) -> DecodedINR:
        params, weights, biases = self.decode(self.encode(graphs))
        return DecodedINR(self.render(params), weights, biases)

    def extra_repr(self) -> str:
        return (f"layout={self.layout}, size={self.size}, omega_0={self.omega_0}, "
                f"out_offset={self.out_offset}")
