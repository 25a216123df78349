"""Transformer layers and stacks as message passing over token graphs.

Each layer is attention over the token graph (:mod:`modules.attention`)
followed by the feed-forward neuron graphs of :class:`LinearAsGNN`, with node-wise norms,
activation, dropout and residual additions kept as the native modules. The twins follow
torch's forward exactly, including its eval-mode fast paths (fused encoder layer,
nested-tensor encoder) and their treatment of masks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.attention import MultiHeadCrossAttentionAsGNN, MultiHeadSelfAttentionAsGNN
from modules.base import NativeTwin, copy_named_modules, swap_to_native, swap_to_twins
from modules.linear import LinearAsGNN
from modules.token_graph import causal_bias, float_mask, native_fast_path_possible


def _activation_fn(activation: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if not isinstance(activation, str):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


def _relu_or_gelu(activation: Callable[[Tensor], Tensor]) -> int:
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return 1
    if activation is F.gelu or isinstance(activation, nn.GELU):
        return 2
    return 0


def _activation_of(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    # A deep-copied nn.TransformerDecoderLayer shadows its activation module with F.relu
    # (its __setstate__ looks for the module in the wrong place); the module is the truth.
    module = layer._modules.get("activation")
    return layer.activation if module is None else module


def _detect_is_causal_mask(mask: Tensor | None, is_causal: bool | None, size: int | None) -> bool:
    """torch's rule: the hint if given, else whether ``mask`` is the causal float mask."""
    if is_causal is not None or mask is None:
        return is_causal is True
    size = size if size is not None else mask.size(-2)
    causal = causal_bias(size, size, mask.dtype, mask.device)
    return mask.size() == causal.size() and bool((mask == causal).all())


def _seq_len(src: Tensor, batch_first: bool) -> int:
    return src.size(0) if src.dim() == 2 else src.size(1 if batch_first else 0)


def _fast_path_masks(attn_mask: Tensor | None, key_padding_mask: Tensor | None, src: Tensor,
                     num_heads: int) -> tuple[Tensor | None, Tensor | None]:
    """torch's fused encoder layer merges both masks and reads any non-zero as masked."""
    if attn_mask is None:
        return None, None if key_padding_mask is None else key_padding_mask != 0
    if key_padding_mask is None:
        return attn_mask != 0, None
    bsz, seq_len = src.shape[:2]
    merged = (attn_mask.reshape(bsz, num_heads, seq_len, seq_len) if attn_mask.dim() == 3
              else attn_mask.view(1, 1, seq_len, seq_len))
    merged = merged + key_padding_mask.view(bsz, 1, 1, seq_len)
    return (merged != 0).expand(bsz, num_heads, -1, -1).reshape(-1, seq_len, seq_len), None


class _TransformerLayerTwin(NativeTwin, nn.Module):
    """Conversion shared by the encoder and decoder layer twins: besides the weights, the
    native layer's node-wise modules (norms, dropouts) and activation carry over."""

    _node_wise: ClassVar[tuple[str, ...]]

    def _copy_modules(self, src: nn.Module, dst: nn.Module) -> None:
        copy_named_modules(src, dst, self._node_wise)
        dst.activation = copy.deepcopy(_activation_of(src))


def _layer_tensors(layer: nn.Module) -> list[Tensor | None]:
    """The tensors torch's fast paths inspect in an encoder layer."""
    sa = layer.self_attn
    return [sa.in_proj_weight, sa.in_proj_bias, sa.out_proj.weight, sa.out_proj.bias,
            layer.norm1.weight, layer.norm1.bias, layer.norm2.weight, layer.norm2.bias,
            layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias]


class TransformerEncoderLayerAsGNN(_TransformerLayerTwin):
    r"""Twin of :class:`torch.nn.TransformerEncoderLayer`: self-attention message
    passing over the token graph, then the feed-forward neuron graphs.

    Tokens are nodes. Self-attention (:class:`MultiHeadSelfAttentionAsGNN`) passes value
    messages along the edges :math:`j \to i` that the masks allow, aggregated by the edge
    softmax; the feed-forward block is two :class:`LinearAsGNN` neuron graphs applied to
    every token; layer norms, activation, dropout and the residual additions are node-wise
    updates (native modules). Post-norm (default):

    .. math::
        \mathbf{h}_i = \mathrm{LN}_1\big(\mathbf{x}_i + \mathrm{MHA}(\mathbf{x})_i\big),
        \qquad \mathbf{y}_i = \mathrm{LN}_2\big(\mathbf{h}_i
        + W_2 \, \sigma(W_1 \mathbf{h}_i + \mathbf{b}_1) + \mathbf{b}_2\big)

    (pre-norm with ``norm_first``). Same arguments, state_dict and forward as torch,
    including its eval-mode fast path's treatment of masks (fully masked rows give NaN,
    float masks are read as boolean there).

    Args:
        d_model (int): Token features :math:`E`.
        nhead (int): Attention heads.
        dim_feedforward (int, optional): Hidden neurons of the feed-forward block.
            (default: ``2048``)
        dropout (float, optional): Dropout probability. (default: ``0.1``)
        activation (str or callable, optional): ``'relu'``, ``'gelu'`` or a function.
            (default: ``F.relu``)
        layer_norm_eps (float, optional): Layer norm epsilon. (default: ``1e-5``)
        batch_first (bool, optional): (batch, tokens, features) layout.
            (default: ``False``)
        norm_first (bool, optional): Pre-norm. (default: ``False``)
        bias (bool, optional): Biases of linear layers and norms. (default: ``True``)
        device (torch.device, optional): Device of the parameters.
        dtype (torch.dtype, optional): Data type of the parameters.

    Shapes:
        - **input:** ``src`` :math:`(S, N, E)` (:math:`(N, S, E)` with ``batch_first``,
          or :math:`(S, E)`); ``src_mask`` :math:`(S, S)` or :math:`(N \cdot nhead, S, S)`;
          ``src_key_padding_mask`` :math:`(N, S)`
        - **output:** same shape as ``src``
    """

    native_type = nn.TransformerEncoderLayer

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadSelfAttentionAsGNN(d_model, nhead, dropout=dropout,
                                                     bias=bias, batch_first=batch_first,
                                                     **factory)
        self.linear1 = LinearAsGNN(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = LinearAsGNN(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation_fn(activation)
        self.activation_relu_or_gelu = _relu_or_gelu(self.activation)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        return {"d_model": module.self_attn.embed_dim, "nhead": module.self_attn.num_heads,
                "dim_feedforward": module.linear1.out_features,
                "dropout": module.dropout.p, "activation": _activation_of(module),
                "layer_norm_eps": module.norm1.eps,
                "batch_first": module.self_attn.batch_first, "norm_first": module.norm_first,
                "bias": module.linear1.bias is not None}

    _node_wise = ("norm1", "norm2", "dropout", "dropout1", "dropout2")

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        src_key_padding_mask = float_mask(src_key_padding_mask, "src_key_padding_mask",
                                           src.dtype)
        src_mask = float_mask(src_mask, "src_mask", src.dtype)
        fast = self._native_fast_path(src)
        if fast:
            src_mask, src_key_padding_mask = _fast_path_masks(
                src_mask, src_key_padding_mask, src, self.self_attn.num_heads)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal,
                                   fast)
            x = x + self._ff_block(self.norm2(x), fast)
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal,
                                              fast))
            x = self.norm2(x + self._ff_block(x, fast))
        return x

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None,
                  key_padding_mask: Tensor | None, is_causal: bool, fast: bool) -> Tensor:
        if fast:
            x = self.self_attn.attend(x, x, x, key_padding_mask, False, attn_mask,
                                      is_causal=False, nan_rows=True)[0]
        else:
            x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                               need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor, fast: bool = False) -> Tensor:
        activation = self.activation
        if fast:  # torch's fused layer knows only exact GELU and ReLU (e.g. no tanh GELU)
            activation = F.gelu if self.activation_relu_or_gelu == 2 else F.relu
        x = self.linear2(self.dropout(activation(self.linear1(x))))
        return self.dropout2(x)

    def _native_fast_path(self, src: Tensor) -> bool:
        """Whether torch would run its fused encoder layer here."""
        sa = self.self_attn
        if (src.dim() != 3 or self.training or not sa.batch_first or sa.in_proj_bias is None
                or not sa._qkv_same_embed_dim or not self.activation_relu_or_gelu
                or self.norm1.eps != self.norm2.eps or sa.num_heads % 2 == 1):
            return False
        if any(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.modules()):
            return False
        return native_fast_path_possible([src, *_layer_tensors(self)])


class TransformerDecoderLayerAsGNN(_TransformerLayerTwin):
    r"""Twin of :class:`torch.nn.TransformerDecoderLayer`: self-attention over the
    target tokens, attention from the target tokens to the memory tokens, then the
    feed-forward neuron graphs.

    Tokens are nodes. Self-attention (:class:`MultiHeadSelfAttentionAsGNN`) runs over the
    graph of target tokens, cross-attention (:class:`MultiHeadCrossAttentionAsGNN`) over
    the bipartite graph memory token :math:`j` :math:`\to` target token :math:`i`;
    messages are values, aggregated by the edge softmax. The feed-forward block is two
    :class:`LinearAsGNN` neuron graphs per token; norms, activation, dropout and residual
    additions are node-wise. Post-norm (default):

    .. math::
        \mathbf{h} = \mathrm{LN}_1(\mathbf{x} + \mathrm{SA}(\mathbf{x})), \quad
        \mathbf{g} = \mathrm{LN}_2(\mathbf{h} + \mathrm{CA}(\mathbf{h}, \mathbf{m})),
        \quad \mathbf{y} = \mathrm{LN}_3(\mathbf{g} + \mathrm{FF}(\mathbf{g}))

    Args:
        d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
        norm_first, bias, device, dtype: As :class:`TransformerEncoderLayerAsGNN`.

    Shapes:
        - **input:** ``tgt`` :math:`(T, N, E)`, ``memory`` :math:`(S, N, E)` (batch first
          with ``batch_first``); masks as :class:`torch.nn.TransformerDecoderLayer`
        - **output:** same shape as ``tgt``
    """

    native_type = nn.TransformerDecoderLayer

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadSelfAttentionAsGNN(d_model, nhead, dropout=dropout,
                                                     batch_first=batch_first, bias=bias,
                                                     **factory)
        self.multihead_attn = MultiHeadCrossAttentionAsGNN(d_model, nhead, dropout=dropout,
                                                           batch_first=batch_first, bias=bias,
                                                           **factory)
        self.linear1 = LinearAsGNN(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = LinearAsGNN(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation_fn(activation)

    native_kwargs = staticmethod(TransformerEncoderLayerAsGNN.native_kwargs)

    _node_wise = ("norm1", "norm2", "norm3", "dropout", "dropout1", "dropout2", "dropout3")

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False) -> Tensor:
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask,
                                    memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                               memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None,
                  key_padding_mask: Tensor | None, is_causal: bool) -> Tensor:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           is_causal=is_causal, need_weights=False)[0]
        return self.dropout1(x)

    def _mha_block(self, x: Tensor, mem: Tensor, attn_mask: Tensor | None,
                   key_padding_mask: Tensor | None, is_causal: bool) -> Tensor:
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, is_causal=is_causal,
                                need_weights=False)[0]
        return self.dropout2(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout3(x)


def _converted(module: nn.Module | None, to_twin: bool) -> nn.Module | None:
    """A deep copy of ``module`` with its layers swapped for twins (or back)."""
    if module is None:
        return None
    module = copy.deepcopy(module)
    return swap_to_twins(module) if to_twin else swap_to_native(module)


class TransformerEncoderAsGNN(NativeTwin, nn.Module):
    r"""Twin of :class:`torch.nn.TransformerEncoder`: a stack of
    :class:`TransformerEncoderLayerAsGNN`, each message passing over the token graph.

    The graph of every layer has the tokens as nodes and the edges the masks allow; layer
    :math:`l` maps the token features :math:`\mathbf{x}^{(l)}` to
    :math:`\mathbf{x}^{(l+1)}`, an optional final norm follows:

    .. math::
        \mathbf{y} = \mathrm{norm}\big(f_L \circ \cdots \circ f_1(\mathbf{x})\big)

    Mirrors torch's nested-tensor fast path (eval mode, batch-first, key padding
    only): the outputs at padded positions are zero before the final norm.

    Args:
        encoder_layer (nn.Module): The layer to repeat (native layers are converted).
        num_layers (int): Number of layers :math:`L`.
        norm (nn.Module, optional): Final node-wise norm.
        enable_nested_tensor (bool, optional): As torch. (default: ``True``)
        mask_check (bool, optional): As torch. (default: ``True``)

    Shapes:
        - **input:** ``src`` as :class:`TransformerEncoderLayerAsGNN`
        - **output:** same shape as ``src``
    """

    native_type = nn.TransformerEncoder

    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        if not isinstance(encoder_layer, NativeTwin):
            encoder_layer = _converted(encoder_layer, to_twin=True)
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = enable_nested_tensor and self._nested_tensor_capable(
            encoder_layer)
        self.mask_check = mask_check

    @staticmethod
    def _nested_tensor_capable(layer: nn.Module) -> bool:
        """torch's constructor test for using nested tensors."""
        if not isinstance(layer, TransformerEncoderLayerAsGNN):
            return False
        sa = layer.self_attn
        return (not layer.norm_first and sa.batch_first and sa._qkv_same_embed_dim
                and sa.in_proj_bias is not None and bool(layer.activation_relu_or_gelu)
                and layer.norm1.eps == layer.norm2.eps and sa.num_heads % 2 == 0)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        to_twin = not isinstance(module, NativeTwin)
        # A skeleton without layers (and, on the native side, without nested tensors: no
        # warning about the layer); _copy_modules converts each layer and the settings.
        return {"encoder_layer": _converted(module.layers[0], to_twin),
                "num_layers": 0, "norm": _converted(module.norm, to_twin),
                "enable_nested_tensor": module.enable_nested_tensor and to_twin,
                "mask_check": getattr(module, "mask_check", True)}

    def _copy_modules(self, src: nn.Module, dst: nn.Module) -> None:
        dst.layers = nn.ModuleList([_converted(m, dst is self) for m in src.layers])
        dst.num_layers = src.num_layers
        dst.enable_nested_tensor = src.enable_nested_tensor
        dst.use_nested_tensor = getattr(src, "use_nested_tensor", False)

    def forward(self, src: Tensor, mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        src_key_padding_mask = float_mask(src_key_padding_mask, "src_key_padding_mask",
                                           src.dtype)
        mask = float_mask(mask, "mask", src.dtype)
        first = self.layers[0]
        batch_first = first.self_attn.batch_first
        padded = None
        if self._nested_fast_path(src, mask, src_key_padding_mask):
            padded = src_key_padding_mask != 0
        is_causal = _detect_is_causal_mask(mask, is_causal, _seq_len(src, batch_first))
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, is_causal=is_causal,
                           src_key_padding_mask=src_key_padding_mask)
        if padded is not None:
            # torch runs the layers on nested tensors and pads them back with zeros.
            output = output.masked_fill(padded.unsqueeze(-1), 0.0)
        if self.norm is not None:
            output = self.norm(output)
        return output

    def _nested_fast_path(self, src: Tensor, mask: Tensor | None,
                          key_padding_mask: Tensor | None) -> bool:
        """Whether torch would run the layers on nested tensors here."""
        first = self.layers[0]
        if (not self.use_nested_tensor or first.training or src.dim() != 3
                or key_padding_mask is None or mask is not None):
            return False
        if self.mask_check:
            valid = key_padding_mask == 0
            if not bool((valid[:, 1:] <= valid[:, :-1]).all()):  # not left-aligned
                return False
        return native_fast_path_possible([src, *_layer_tensors(first)])


class TransformerDecoderAsGNN(NativeTwin, nn.Module):
    r"""Twin of :class:`torch.nn.TransformerDecoder`: a stack of
    :class:`TransformerDecoderLayerAsGNN`, each attending over the target-token graph and
    the memory-to-target graph.

    .. math::
        \mathbf{y} = \mathrm{norm}\big(f_L(\cdots f_1(\mathbf{x}, \mathbf{m}) \cdots,
        \mathbf{m})\big)

    Args:
        decoder_layer (nn.Module): The layer to repeat (native layers are converted).
        num_layers (int): Number of layers :math:`L`.
        norm (nn.Module, optional): Final node-wise norm.

    Shapes:
        - **input:** ``tgt`` :math:`(T, N, E)`, ``memory`` :math:`(S, N, E)` (batch first
          with ``batch_first``)
        - **output:** same shape as ``tgt``
    """

    native_type = nn.TransformerDecoder

    def __init__(self, decoder_layer: nn.Module, num_layers: int,
                 norm: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(decoder_layer, NativeTwin):
            decoder_layer = _converted(decoder_layer, to_twin=True)
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        to_twin = not isinstance(module, NativeTwin)
        # A skeleton without layers; _copy_modules converts each layer.
        return {"decoder_layer": _converted(module.layers[0], to_twin),
                "num_layers": 0, "norm": _converted(module.norm, to_twin)}

    def _copy_modules(self, src: nn.Module, dst: nn.Module) -> None:
        dst.layers = nn.ModuleList([_converted(m, dst is self) for m in src.layers])
        dst.num_layers = src.num_layers

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        seq_len = _seq_len(tgt, self.layers[0].self_attn.batch_first)
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, seq_len)
        output = tgt
        for layer in self.layers:
            output = layer(output, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                           tgt_key_padding_mask=tgt_key_padding_mask,
                           memory_key_padding_mask=memory_key_padding_mask,
                           tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerAsGNN(NativeTwin, nn.Module):
    r"""Twin of :class:`torch.nn.Transformer`: encoder and decoder stacks of twins.

    The encoder passes messages over the graph of source tokens, the decoder over the
    graph of target tokens and the bipartite graph from the encoded source tokens
    (memory) to the target tokens:

    .. math::
        \mathbf{y} = \mathrm{Decoder}\big(\mathbf{t}, \mathrm{Encoder}(\mathbf{s})\big)

    Args:
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout,
        activation, custom_encoder, custom_decoder, layer_norm_eps, batch_first,
        norm_first, bias, device, dtype: As :class:`torch.nn.Transformer`.

    Shapes:
        - **input:** ``src`` :math:`(S, N, E)`, ``tgt`` :math:`(T, N, E)` (batch first with
          ``batch_first``), masks as :class:`torch.nn.Transformer`
        - **output:** :math:`(T, N, E)`
    """

    native_type = nn.Transformer

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: str | Callable[[Tensor], Tensor] = F.relu,
                 custom_encoder: nn.Module | None = None,
                 custom_decoder: nn.Module | None = None, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                      batch_first, norm_first, bias)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoderAsGNN(
                TransformerEncoderLayerAsGNN(*layer_args, **factory), num_encoder_layers,
                nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoderAsGNN(
                TransformerDecoderLayerAsGNN(*layer_args, **factory), num_decoder_layers,
                nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    generate_square_subsequent_mask = staticmethod(nn.Transformer.generate_square_subsequent_mask)

    @staticmethod
    def native_kwargs(module: nn.Module) -> dict[str, Any]:
        to_twin = not isinstance(module, NativeTwin)
        return {"d_model": module.d_model, "nhead": module.nhead,
                "batch_first": module.batch_first,
                "custom_encoder": _converted(module.encoder, to_twin),
                "custom_decoder": _converted(module.decoder, to_twin)}

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None,
                tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None,
                tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None,
                src_is_causal: bool | None = None, tgt_is_causal: bool | None = None,
                memory_is_causal: bool = False) -> Tensor:
        batch = 0 if self.batch_first else 1
        if src.dim() == 3 and src.size(batch) != tgt.size(batch):
            raise RuntimeError(f"the batch number of src and tgt must be equal, got "
                               f"{src.size(batch)} and {tgt.size(batch)}")
        if src.size(-1) != self.d_model or tgt.size(-1) != self.d_model:
            raise RuntimeError(f"the feature number of src and tgt must be equal to d_model="
                               f"{self.d_model}, got {src.size(-1)} and {tgt.size(-1)}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
