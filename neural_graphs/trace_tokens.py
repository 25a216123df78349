"""Transformers in ``to_neural_graph`` (internal): self-attention as q, k, v layers and a
parameter-free attention layer, Transformer encoder layers, the class token and position
embedding of token-major states (parameters, or buffers such as SimpleViT's fixed sin-cos
embedding), picking one token, and the mean over the tokens (``x.mean(1)``, SimpleViT's
pooling: a global average pooling of the tokens)."""

from __future__ import annotations

from typing import Any

from torch import nn

from neural_graphs.activations import function_activation, module_activation
from neural_graphs.trace_state import _Attr, _Group, _Layer, _model_tensor, _Rows, _Value

__all__: list[str] = []


def _is_encoder_layer(m: nn.Module) -> bool:
    return type(m).__name__ in ("TransformerEncoderLayer", "TransformerEncoderLayerAsGNN")


def _is_encoder(m: nn.Module) -> bool:
    return type(m).__name__ in ("TransformerEncoder", "TransformerEncoderAsGNN")


def _is_attention(m: nn.Module) -> bool:
    return type(m).__name__ in ("MultiheadAttention", "MultiHeadCrossAttentionAsGNN",
                                "MultiHeadSelfAttentionAsGNN")


class _TokenMixin:
    """The transformer half of the network reader; mixed into ``tracing._Builder``, whose
    ``source``, ``new_layer``, ``close``, ``linear``, ``layernorm``, ``activation``,
    ``add`` and ``pool`` it calls."""

    layers: list[_Layer]
    model: nn.Module

    def rows_linear(self, m: nn.Module, path: str, value: _Value, rows: tuple[int, int],
                    kind: str) -> _Value:
        """q, k or v: rows of ``in_proj_weight``, a Linear layer of their own."""
        weight = m.in_proj_weight[rows[0]:rows[1]]
        bias = None if m.in_proj_bias is None else m.in_proj_bias[rows[0]:rows[1]]
        src, pre = self.source(value, m.embed_dim, 0, path)
        layer = self.new_layer(kind, rows[1] - rows[0], path, _Rows(weight, bias, rows),
                               self.layers[src].spatial_dims)
        layer.weight_rows = rows
        layer.groups.append(_Group(src, "linear", pre, layer.module, path))
        return _Value(layer.index, tokens=value.tokens)

    def attention(self, m: nn.Module, path: str, value: _Value) -> _Value:
        """Self-attention: q, k, v layers, the attention layer (one neuron per value
        neuron, its state the heads' outputs) and the output projection, left open."""
        if not getattr(m, "_qkv_same_embed_dim", True) or m.in_proj_weight is None \
                or m.bias_k is not None or m.add_zero_attn or not m.batch_first:
            raise TypeError(f"to_neural_graph: MultiheadAttention at '{path}' must be "
                            "batch_first self-attention with one in_proj_weight, no "
                            "bias_k/bias_v and no add_zero_attn")
        if not (value.tokens or not self.layers[value.layer].spatial_dims):
            raise TypeError(f"to_neural_graph: attention at '{path}' needs token-major "
                            "inputs")
        e = m.embed_dim
        q, k, v = (self.rows_linear(m, path, value, (i * e, (i + 1) * e), kind)
                   for i, kind in enumerate(("query", "key", "value")))
        heads = self.new_layer("attention", e, path, None, self.layers[q.layer].spatial_dims)
        heads.num_heads = m.num_heads
        for role, part in zip(("query", "key", "value"), (q, k, v)):
            self.close(part)
            heads.groups.append(_Group(part.layer, "attention", (), None, path,
                                       {"role": role, "num_heads": m.num_heads}))
        self.close(_Value(heads.index))
        return self.linear(m.out_proj, f"{path}.out_proj", _Value(heads.index, tokens=True))

    def encoder_layer(self, m: nn.Module, path: str, value: _Value) -> _Value:
        act = m.activation
        try:
            read = (function_activation(act, (), {}) if not isinstance(act, nn.Module)
                    else module_activation(act))
        except TypeError:  # an approximate GELU
            read = None
        name = read[0] if read else None
        if name not in ("relu", "gelu") or not m.self_attn.batch_first:
            raise TypeError(f"to_neural_graph: TransformerEncoderLayer at '{path}' must be "
                            "batch_first with a ReLU or GELU activation")
        sub = {n: f"{path}.{n}" for n in ("self_attn", "linear1", "linear2", "norm1", "norm2")}

        def feed_forward(h: _Value) -> _Value:
            hidden = self.activation(name, None, self.linear(m.linear1, sub["linear1"], h))
            return self.linear(m.linear2, sub["linear2"], hidden)

        if m.norm_first:
            attn = self.attention(m.self_attn, sub["self_attn"],
                                  self.layernorm(m.norm1, sub["norm1"], value))
            h = self.add(attn, value, path)
            out = self.add(feed_forward(self.layernorm(m.norm2, sub["norm2"], h)), h, path)
            return self.close(out)
        h = self.add(self.attention(m.self_attn, sub["self_attn"], value), value, path)
        h = self.layernorm(m.norm1, sub["norm1"], h)
        h = self.layernorm(m.norm2, sub["norm2"], self.add(feed_forward(h), h, path))
        return h

    def encoder(self, m: nn.Module, path: str, value: _Value) -> _Value:
        for i, layer in enumerate(m.layers):
            value = self.encoder_layer(layer, f"{path}.layers.{i}", value)
        if m.norm is not None:
            value = self.layernorm(m.norm, f"{path}.norm", value)
        return value

    def token_layer(self, value: _Value, path: str) -> _Layer:
        """The layer holding a class token and position embedding of token-major states."""
        layer = self.layers[value.layer]
        if layer.kind == "tokens" and self.is_open(value):
            return layer
        src = self.source(value, layer.size, layer.spatial_dims or 0, path)
        tokens = self.new_layer("tokens", layer.size, path, None, 1)
        tokens.groups.append(_Group(src[0], "residual", src[1]))
        return tokens

    def prepend(self, attr: _Attr, value: _Value, path: str) -> _Value:
        param = _model_tensor(self.model, attr.target)
        layer = self.token_layer(value, path)
        if param.numel() != layer.size or "prepend" in layer.tokens:
            raise TypeError(f"to_neural_graph: concatenation at '{path}' must prepend one "
                            f"token of {layer.size} features")
        layer.tokens["prepend"] = attr.target
        return _Value(layer.index, tokens=True)

    def position(self, attr: _Attr, value: _Value, path: str) -> _Value:
        param = _model_tensor(self.model, attr.target)
        layer = self.token_layer(value, path)
        if param.dim() != 3 or param.shape[0] != 1 or param.shape[2] != layer.size or \
                "position" in layer.tokens:
            raise TypeError(f"to_neural_graph: addition of '{attr.target}' at '{path}' must "
                            f"add a (1, tokens, {layer.size}) position embedding")
        layer.tokens["position"] = attr.target
        return _Value(layer.index, tokens=True)

    def select_token(self, value: _Value, index: Any, path: str) -> _Value:
        if not (value.tokens and isinstance(index, tuple) and len(index) == 2
                and index[0] == slice(None) and isinstance(index[1], int)):
            raise TypeError(f"to_neural_graph: unsupported indexing at '{path}' (only "
                            "[:, i], one token of token-major states)")
        self.close(value)
        return _Value(value.layer, (*value.pre, ("select_token", index[1])), tokens=False)

    def mean_tokens(self, value: _Value, keepdim: bool, path: str) -> _Value:
        """``x.mean(1)`` of token-major states: a global average pooling over the tokens
        (the pooling twin, exact), then, without ``keepdim``, its one token picked."""
        pooled = self.pool(nn.AdaptiveAvgPool1d(1), path, value)
        if keepdim:
            return _Value(pooled.layer, pooled.pre, tokens=True)
        return _Value(pooled.layer, (*pooled.pre, ("select_token", 0)), tokens=False)
