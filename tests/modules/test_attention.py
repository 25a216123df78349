"""Attention and Transformer twins against torch.nn (modules/MultiHeadSelfAttentionAsGNN.py)."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from modules import (
    LinearAsGNN,
    MultiHeadCrossAttentionAsGNN,
    MultiHeadSelfAttentionAsGNN,
    TransformerAsGNN,
    TransformerDecoderAsGNN,
    TransformerDecoderLayerAsGNN,
    TransformerEncoderAsGNN,
    TransformerEncoderLayerAsGNN,
    set_fused,
    to_gnn,
    to_native,
)
from modules.equivalence import compare

# torch's own warnings on the native side (mask types, nested-tensor fast path).
pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched"),
              pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]

F64_MAX = 1e-10
F32_MAE = 1e-6
NAN = 1234.5  # stands for NaN in compared outputs: NaN must sit where torch has it


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: on a shared CPU one thread is faster than two.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _randomize(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    return module


def _flat(out: Tensor | tuple) -> Tensor:
    """Output (and attention weights) as one tensor, NaN replaced by a sentinel."""
    parts = [o for o in out if o is not None] if isinstance(out, tuple) else [out]
    return torch.cat([p.reshape(-1) for p in parts]).nan_to_num(nan=NAN)


def _assert_close(err, dtype: torch.dtype, backward: bool = True, what: str = "") -> None:
    if dtype == torch.float64:
        assert err.max <= F64_MAX, f"{what}: max error {err.max:.3e}"
        if backward:
            assert err.grad_max <= F64_MAX, f"{what}: gradient max error {err.grad_max:.3e}"
    else:
        assert err.mae <= F32_MAE, f"{what}: MAE {err.mae:.3e}"
        if backward:
            assert err.grad_max <= 1e-4, f"{what}: gradient max error {err.grad_max:.3e}"


def _tokens(gen: torch.Generator, n: int | None, length: int, dim: int, batch_first: bool,
            dtype: torch.dtype) -> Tensor:
    if n is None:
        return torch.randn(length, dim, generator=gen, dtype=dtype)
    shape = (n, length, dim) if batch_first else (length, n, dim)
    return torch.randn(shape, generator=gen, dtype=dtype)


def _bool_mask(gen: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    """Random boolean mask that never hides source 0 (no fully masked row)."""
    mask = torch.rand(shape, generator=gen) < 0.4
    mask[..., 0] = False
    return mask


def _float_mask(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    mask = torch.randn(shape, generator=gen, dtype=dtype)
    mask = mask.masked_fill(_bool_mask(gen, shape), float("-inf"))
    mask[..., 0] = 0.5
    return mask


# -- multi-head attention: randomized sweep ------------------------------------------------
def _attention_case(seed: int, dtype: torch.dtype):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    heads, head_dim = rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3])
    e = heads * head_dim
    kdim, vdim = rng.choice([None, None, 5]), rng.choice([None, None, 3])
    separate = kdim is not None or vdim is not None
    kind = "cross" if separate else rng.choice(["self", "self", "kv", "cross"])
    tgt_len = rng.choice([1, 2, 4, 6])
    src_len = tgt_len if kind == "self" else rng.choice([1, 3, 5])
    kwargs = {"dropout": rng.choice([0.0, 0.3]), "bias": rng.random() < 0.75,
              "add_bias_kv": rng.random() < 0.2, "add_zero_attn": rng.random() < 0.2,
              "kdim": kdim, "vdim": vdim, "batch_first": rng.random() < 0.5}
    n = rng.choice([1, 2, 3]) if rng.random() < 0.8 else None
    bf = kwargs["batch_first"]
    q = _tokens(gen, n, tgt_len, e, bf, dtype)
    k = _tokens(gen, n, src_len, kdim or e, bf, dtype)
    v = _tokens(gen, n, src_len, vdim or e, bf, dtype)
    inputs = {"self": (q,), "kv": (q, k), "cross": (q, k, v)}[kind]
    bsz = 1 if n is None else n
    attn_kind = rng.choice(["none", "bool", "float", "bool3d", "float3d", "causal"])
    attn_mask, is_causal = None, False
    if attn_kind in ("bool", "float"):
        shape = (tgt_len, src_len)
    else:
        shape = (bsz * heads, tgt_len, src_len)
    if attn_kind.startswith("bool"):
        attn_mask = _bool_mask(gen, shape)
    elif attn_kind.startswith("float"):
        attn_mask = _float_mask(gen, shape, dtype)
    elif attn_kind == "causal":
        attn_mask = torch.ones(tgt_len, src_len, dtype=torch.bool).triu(1)
        is_causal = True
    kpm_kind = rng.choice(["none", "bool", "float"])
    kpm_shape = (src_len,) if n is None else (n, src_len)
    kpm = None
    if kpm_kind == "bool":
        kpm = _bool_mask(gen, kpm_shape)
    elif kpm_kind == "float":
        kpm = _float_mask(gen, kpm_shape, dtype)
    need_weights, average = rng.random() < 0.5, rng.random() < 0.5

    def call(m: nn.Module, xs: tuple) -> Tensor:
        query, key, value = (xs * 3)[:3] if len(xs) == 1 else (xs[0], xs[1], xs[-1])
        return _flat(m(query, key, value, key_padding_mask=kpm, need_weights=need_weights,
                       attn_mask=attn_mask, average_attn_weights=average, is_causal=is_causal))

    native = _randomize(nn.MultiheadAttention(e, heads, **kwargs), seed).to(dtype).eval()
    description = (f"{kind} E={e} h={heads} L={tgt_len} S={src_len} n={n} {kwargs} "
                   f"attn={attn_kind} kpm={kpm_kind} weights={need_weights}/{average}")
    return native, inputs, call, description


@pytest.mark.parametrize("seed", range(48))
def test_attention_sweep(seed: int) -> None:
    for dtype in (torch.float64, torch.float32):
        native, inputs, call, what = _attention_case(seed, dtype)
        twin = MultiHeadCrossAttentionAsGNN.from_native(native)
        for fused in (True, False):
            twin.fused = fused
            err = compare(native, twin, inputs, call=call)
            _assert_close(err, dtype, what=f"fused={fused} {dtype} {what}")
            # No autograd: torch's native fast path where it applies.
            with torch.no_grad():
                err = compare(native, twin, inputs, call=call, backward=False)
            _assert_close(err, dtype, backward=False, what=f"no_grad fused={fused} {what}")


def test_self_attention_single_tensor() -> None:
    native = _randomize(nn.MultiheadAttention(12, 3, batch_first=True), 0).double().eval()
    twin = MultiHeadSelfAttentionAsGNN.from_native(native)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    err = compare(native, twin, (x,),
                  call=lambda m, xs: _flat(m(xs[0], xs[0], xs[0], attn_mask=mask)))
    _assert_close(err, torch.float64)
    expected, weights = native(x, x, x, attn_mask=mask)
    out, twin_weights = twin(x, attn_mask=mask)
    assert (out - expected).abs().max() <= F64_MAX
    assert (twin_weights - weights).abs().max() <= F64_MAX


def test_reference_path_equals_fused_path() -> None:
    torch.manual_seed(0)
    twin = _randomize(MultiHeadCrossAttentionAsGNN(8, 2, kdim=6, vdim=4), 1).double().eval()
    reference = copy.deepcopy(twin)
    reference.fused = False
    q = torch.randn(4, 3, 8, dtype=torch.float64)
    k, v = torch.randn(7, 3, 6, dtype=torch.float64), torch.randn(7, 3, 4, dtype=torch.float64)
    kpm = _bool_mask(torch.Generator().manual_seed(0), (3, 7))
    mask = _float_mask(torch.Generator().manual_seed(1), (6, 4, 7), torch.float64)
    err = compare(twin, reference, (q, k, v), call=lambda m, xs: _flat(
        m(*xs, key_padding_mask=kpm, attn_mask=mask, average_attn_weights=False)))
    _assert_close(err, torch.float64)
    # set_fused reaches the attention inside a layer stack.
    encoder = _randomize(nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, enable_nested_tensor=False),
        2).double().eval()
    fused = to_gnn(encoder)
    unfused = set_fused(to_gnn(encoder), False)
    assert all(not m.fused for m in unfused.modules() if hasattr(m, "fused"))
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    err = compare(fused, unfused, (x,),
                  call=lambda m, xs: m(xs[0], src_key_padding_mask=kpm[:, :5]))
    _assert_close(err, torch.float64)


# -- odd corners ---------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_fully_masked_rows(batch_first: bool, training: bool, need_weights: bool,
                           grad: bool) -> None:
    """NaN rows where torch's math or native path runs, zero attention under SDPA."""
    native = _randomize(nn.MultiheadAttention(8, 2, batch_first=batch_first), 3)
    native = native.double().train(training)
    twin = MultiHeadCrossAttentionAsGNN.from_native(native)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((3, 5, 8) if batch_first else (5, 3, 8), generator=gen, dtype=torch.float64)
    kpm = torch.zeros(3, 5, dtype=torch.bool)
    kpm[1] = True
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[2] = True
    for fused in (True, False):
        twin.fused = fused
        for masks in ({"key_padding_mask": kpm}, {"attn_mask": mask},
                      {"attn_mask": mask.double().masked_fill(mask, float("-inf"))}):
            def call(m, xs, masks=masks):
                return _flat(m(xs[0], xs[0], xs[0], need_weights=need_weights, **masks))
            with torch.set_grad_enabled(grad):
                expected = call(native, (x,))
                err = compare(native, twin, (x,), call=call, backward=False)
            assert err.max <= F64_MAX, f"fused={fused} {list(masks)}"
            # torch's native fast path: eval, batch-first, no autograd, boolean masks.
            fast_path = (batch_first and not training and not grad
                         and all(m.dtype == torch.bool for m in masks.values()))
            assert bool((expected == NAN).any()) == (need_weights or fast_path)
    # Zero attention has finite gradients, equal to torch's.
    if not need_weights and grad:
        twin.fused = True
        err = compare(native, twin, (x,), call=lambda m, xs: m(
            xs[0], xs[0], xs[0], key_padding_mask=kpm, need_weights=False)[0])
        _assert_close(err, torch.float64)


def test_is_causal_hint_is_trusted_like_torch() -> None:
    """torch ignores attn_mask under is_causal when it runs SDPA, and uses it otherwise."""
    native = _randomize(nn.MultiheadAttention(8, 2), 4).double()
    twin = MultiHeadCrossAttentionAsGNN.from_native(native)
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    not_causal = _bool_mask(torch.Generator().manual_seed(0), (5, 5))
    for need_weights in (False, True):
        for fused in (True, False):
            twin.fused = fused
            err = compare(native, twin, (x,), call=lambda m, xs, nw=need_weights: _flat(
                m(xs[0], xs[0], xs[0], attn_mask=not_causal, is_causal=True, need_weights=nw)))
            _assert_close(err, torch.float64)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        twin(x, x, x, is_causal=True)


def test_dropout_same_random_state_fused() -> None:
    """Training mode: the fused path draws the same dropout masks as torch."""
    for dtype in (torch.float64, torch.float32):
        x = torch.randn(6, 4, 8, dtype=dtype)
        mem = torch.randn(5, 4, 8, dtype=dtype)
        mem_batch_first = torch.randn(6, 3, 8, dtype=dtype)
        natives = [
            (nn.MultiheadAttention(8, 2, dropout=0.4), lambda m, xs: _flat(m(xs[0], xs[0], xs[0]))),
            (nn.MultiheadAttention(8, 2, dropout=0.4),
             lambda m, xs: m(xs[0], xs[0], xs[0], need_weights=False)[0]),
            (nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3), lambda m, xs: m(xs[0])),
            # batch-first: the attention output is a transposed view, as in torch, so the
            # dropout after it draws the same mask
            (nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=True),
             lambda m, xs: m(xs[0])),
            (nn.TransformerDecoderLayer(8, 2, 16, dropout=0.3, norm_first=True),
             lambda m, xs, mem=mem: m(xs[0], mem)),
            (nn.TransformerDecoderLayer(8, 2, 16, dropout=0.3, batch_first=True),
             lambda m, xs, mem=mem_batch_first: m(xs[0], mem)),
        ]
        for native, call in natives:
            native = native.to(dtype).train()
            twin = to_gnn(native)

            def seeded(m, xs, call=call):
                torch.manual_seed(7)
                return call(m, xs)
            err = compare(native, twin, (x,), call=seeded)
            _assert_close(err, dtype, what=f"{type(native).__name__} {dtype}")


@pytest.mark.parametrize("fused", [True, False])
def test_dropout_statistics(fused: bool) -> None:
    """Training mode: dropout keeps the mean of the eval output and torch's spread."""
    torch.manual_seed(0)
    native = _randomize(nn.MultiheadAttention(8, 2, dropout=0.5), 5).double()
    twin = MultiHeadCrossAttentionAsGNN.from_native(native)
    twin.fused = fused
    n = 2000
    x = torch.randn(4, 1, 8, dtype=torch.float64).expand(4, n, 8)
    with torch.no_grad():
        eval_out = twin.eval()(x[:, :1], x[:, :1], x[:, :1])[0]
        twin.train()
        outs = {name: m(x, x, x, need_weights=False)[0]
                for name, m in (("native", native.train()), ("twin", twin))}
    std = {name: out.std(dim=1) for name, out in outs.items()}
    mean = outs["twin"].mean(dim=1, keepdim=True)
    assert ((mean - eval_out).abs() <= 5 * std["twin"].unsqueeze(1) / n**0.5 + 1e-12).all()
    assert (outs["twin"] - eval_out).abs().max() > 1e-3  # dropout is active
    ratio = std["twin"] / std["native"]
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), ratio


# -- Transformer layers --------------------------------------------------------------------
def _layer_case(seed: int, decoder: bool):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    heads = rng.choice([1, 2, 4])
    d = heads * rng.choice([2, 3])
    activation = rng.choice(["relu", "gelu", F.gelu, nn.GELU(approximate="tanh"), torch.tanh])
    kwargs = {"dim_feedforward": rng.choice([4, 12]), "dropout": 0.2,
              "activation": activation, "layer_norm_eps": rng.choice([1e-5, 1e-3]),
              "batch_first": rng.random() < 0.6, "norm_first": rng.random() < 0.5,
              "bias": rng.random() < 0.8}
    layer_type = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    native = _randomize(layer_type(d, heads, **kwargs), seed).double().eval()
    n = rng.choice([1, 3])
    tgt_len, src_len = rng.choice([1, 4, 6]), rng.choice([2, 5])
    x = _tokens(gen, n, tgt_len, d, kwargs["batch_first"], torch.float64)
    mem = _tokens(gen, n, src_len, d, kwargs["batch_first"], torch.float64)
    mask_kind = rng.choice(["none", "causal", "bool", "bool3d"])
    mask, causal = None, False
    if mask_kind == "causal":
        mask, causal = nn.Transformer.generate_square_subsequent_mask(tgt_len,
                                                                      dtype=torch.float64), True
    elif mask_kind == "bool":
        mask = _bool_mask(gen, (tgt_len, tgt_len))
    elif mask_kind == "bool3d":
        mask = _bool_mask(gen, (n * heads, tgt_len, tgt_len))
    kpm = _bool_mask(gen, (n, tgt_len)) if rng.random() < 0.5 else None
    mem_kpm = _bool_mask(gen, (n, src_len)) if rng.random() < 0.5 else None
    if decoder:
        def call(m, xs):
            return _flat(m(xs[0], xs[1], tgt_mask=mask, tgt_key_padding_mask=kpm,
                           memory_key_padding_mask=mem_kpm, tgt_is_causal=causal))
        inputs = (x, mem)
    else:
        def call(m, xs):
            return _flat(m(xs[0], src_mask=mask, src_key_padding_mask=kpm, is_causal=causal))
        inputs = (x,)
    return native, inputs, call, f"{kwargs} n={n} L={tgt_len} mask={mask_kind}"


@pytest.mark.parametrize("decoder", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_transformer_layer_sweep(seed: int, decoder: bool) -> None:
    native, inputs, call, what = _layer_case(seed, decoder)
    twin = to_gnn(native)
    assert isinstance(twin, TransformerDecoderLayerAsGNN if decoder
                      else TransformerEncoderLayerAsGNN)
    for fused in (True, False):
        set_fused(twin, fused)
        _assert_close(compare(native, twin, inputs, call=call), torch.float64, what=what)
        with torch.no_grad():  # torch's fused encoder layer where it applies
            err = compare(native, twin, inputs, call=call, backward=False)
        _assert_close(err, torch.float64, backward=False, what=f"no_grad {what}")


def test_encoder_layer_fast_path_reads_float_masks_as_boolean() -> None:
    native = _randomize(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 6).eval()
    twin = TransformerEncoderLayerAsGNN.from_native(native)
    x = torch.randn(3, 5, 8)
    mask = torch.zeros(5, 5)
    mask[:, 1], mask[:, 3], mask[4] = 0.5, -2.0, float("-inf")
    kpm = torch.zeros(3, 5)
    kpm[:, 4] = 0.3
    for masks in ({"src_mask": mask}, {"src_key_padding_mask": kpm},
                  {"src_mask": mask, "src_key_padding_mask": kpm},
                  {"src_mask": mask.expand(6, 5, 5).clone()}):
        def call(m, xs, masks=masks):
            return _flat(m(xs[0], **masks))
        with torch.no_grad():
            fast = compare(native, twin, (x,), call=call, backward=False)
        slow = compare(native, twin, (x,), call=call)  # autograd: torch's python path
        assert fast.max <= 1e-5 and slow.max <= 1e-5, list(masks)
        assert slow.grad_max <= 1e-4


@pytest.mark.parametrize("left_aligned", [True, False])
def test_encoder_nested_tensor_path(left_aligned: bool) -> None:
    """Eval-mode TransformerEncoder with key padding: padded positions are zero pre-norm."""
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    native = _randomize(nn.TransformerEncoder(layer, 2, nn.LayerNorm(8)), 7).eval()
    twin = to_gnn(native)
    assert isinstance(twin, TransformerEncoderAsGNN) and twin.use_nested_tensor
    x = torch.randn(3, 6, 8)
    kpm = torch.arange(6)[None, :] >= torch.tensor([[6], [2], [4]])
    if not left_aligned:
        kpm = kpm.flip(-1)
    with torch.no_grad():
        err = compare(native, twin, (x,), call=lambda m, xs: _flat(
            m(xs[0], src_key_padding_mask=kpm)), backward=False)
    assert err.max <= 1e-5
    err = compare(native, twin, (x,), call=lambda m, xs: m(xs[0], src_key_padding_mask=kpm))
    assert err.max <= 1e-5 and err.grad_max <= 1e-4


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_stacks_and_transformer(norm_first: bool, batch_first: bool) -> None:
    torch.manual_seed(0)
    native = _randomize(nn.Transformer(8, 2, 2, 2, 16, dropout=0.1, batch_first=batch_first,
                                       norm_first=norm_first), 8).double().eval()
    twin = to_gnn(native)
    assert isinstance(twin, TransformerAsGNN)
    assert isinstance(twin.encoder, TransformerEncoderAsGNN)
    assert isinstance(twin.decoder, TransformerDecoderAsGNN)
    gen = torch.Generator().manual_seed(0)
    src = _tokens(gen, 2, 5, 8, batch_first, torch.float64)
    tgt = _tokens(gen, 2, 4, 8, batch_first, torch.float64)
    src_kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)

    def call(m, xs):
        return m(xs[0], xs[1], tgt_mask=tgt_mask, src_key_padding_mask=src_kpm,
                 memory_key_padding_mask=src_kpm)
    for fused in (True, False):
        set_fused(twin, fused)
        _assert_close(compare(native, twin, (src, tgt), call=call), torch.float64)
        with torch.no_grad():
            err = compare(native, twin, (src, tgt), call=call, backward=False)
        _assert_close(err, torch.float64, backward=False)
    unbatched = compare(native, twin, (src[0] if batch_first else src[:, 0],
                                       tgt[0] if batch_first else tgt[:, 0]),
                        call=lambda m, xs: m(xs[0], xs[1], tgt_mask=tgt_mask))
    _assert_close(unbatched, torch.float64)


# -- graph ---------------------------------------------------------------------------------
def test_graph_contents() -> None:
    attn = MultiHeadCrossAttentionAsGNN(4, 2)
    complete = attn.graph(3, 2)
    assert complete.edge_index.shape == (2, 6) and complete.edge_attr is None
    assert complete.num_src_nodes == 2 and complete.num_dst_nodes == 3

    causal = attn.graph(4, is_causal=True)
    src, dst = causal.edge_index
    assert causal.edge_index.shape[1] == 4 * 5 // 2
    assert (src <= dst).all()

    causal_mask = attn.graph(4, attn_mask=nn.Transformer.generate_square_subsequent_mask(4))
    assert causal_mask.edge_index.shape[1] == 10
    assert (causal_mask.edge_attr == 0).all()

    padded = attn.graph(3, 4, key_padding_mask=torch.tensor([False, True, False, True]))
    assert padded.edge_index.shape[1] == 3 * 2
    assert set(padded.edge_index[0].tolist()) == {0, 2}

    per_sample = attn.graph(2, 3, key_padding_mask=torch.tensor([[False, False, True],
                                                                 [False, True, True]]))
    assert per_sample.batch_size == 2
    assert per_sample.num_src_nodes == 6 and per_sample.num_dst_nodes == 4
    assert sorted(per_sample.edge_index.t().tolist()) == [[0, 0], [0, 1], [1, 0], [1, 1],
                                                          [3, 2], [3, 3]]

    values = torch.tensor([[0.5, float("-inf"), -1.0], [2.0, 3.0, float("-inf")]])
    biased = attn.graph(2, 3, attn_mask=values)
    src, dst = biased.edge_index
    assert biased.edge_index.shape[1] == 4
    assert torch.equal(biased.edge_attr[:, 0], values[dst, src])

    per_head = attn.graph(2, 2, attn_mask=torch.tensor([[[False, True], [False, False]],
                                                        [[False, False], [True, False]]]))
    assert per_head.edge_index.shape[1] == 4 and per_head.edge_attr.shape == (4, 2)
    assert per_head.edge_attr.isneginf().sum() == 2

    extra = MultiHeadCrossAttentionAsGNN(4, 2, add_bias_kv=True, add_zero_attn=True)
    g = extra.graph(2, 3, key_padding_mask=torch.tensor([True, True, True]))
    assert sorted(g.edge_index[0].unique().tolist()) == [3, 4]  # bias_k/v and zero nodes


def test_graph_drives_the_reference_path() -> None:
    """The reference path attends exactly along graph(): removing an edge changes nothing."""
    torch.manual_seed(0)
    twin = _randomize(MultiHeadCrossAttentionAsGNN(4, 2), 9).double()
    twin.fused = False
    x = torch.randn(4, 1, 4, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    out, weights = twin(x, x, x, attn_mask=mask)
    g = twin.graph(4, attn_mask=mask)
    dense = torch.zeros(4, 4, dtype=torch.bool)
    dense[g.edge_index[1], g.edge_index[0]] = True
    assert torch.equal(weights[0] > 0, dense)


# -- conversion and state ------------------------------------------------------------------
NATIVES: dict[str, Callable[[], nn.Module]] = {
    "mha": lambda: nn.MultiheadAttention(8, 2),
    "mha-kdim-vdim-nobias": lambda: nn.MultiheadAttention(8, 2, bias=False, kdim=3, vdim=5),
    "mha-bias-kv": lambda: nn.MultiheadAttention(8, 4, add_bias_kv=True, add_zero_attn=True,
                                                 batch_first=True),
    "encoder-layer": lambda: nn.TransformerEncoderLayer(8, 2, 16, activation="gelu"),
    "decoder-layer": lambda: nn.TransformerDecoderLayer(8, 2, 16, norm_first=True, bias=False),
    "encoder": lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2,
                                             nn.LayerNorm(8), enable_nested_tensor=False),
    "decoder": lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16), 2),
    "transformer": lambda: nn.Transformer(8, 2, 1, 2, 16),
}
TWIN_TYPES = {
    "mha": MultiHeadCrossAttentionAsGNN, "mha-kdim-vdim-nobias": MultiHeadCrossAttentionAsGNN,
    "mha-bias-kv": MultiHeadCrossAttentionAsGNN, "encoder-layer": TransformerEncoderLayerAsGNN,
    "decoder-layer": TransformerDecoderLayerAsGNN, "encoder": TransformerEncoderAsGNN,
    "decoder": TransformerDecoderAsGNN, "transformer": TransformerAsGNN,
}


@pytest.mark.parametrize("name", list(NATIVES))
def test_state_dict_round_trips(name: str) -> None:
    native = _randomize(NATIVES[name](), 10)
    twin_type = TWIN_TYPES[name]
    twin = twin_type.from_native(native)
    assert type(twin) is twin_type
    n_state, t_state = native.state_dict(), twin.state_dict()
    assert list(n_state) == list(t_state)
    assert all(n_state[k].shape == t_state[k].shape and torch.equal(n_state[k], t_state[k])
               for k in n_state)
    # Both ways, strict.
    fresh_native = NATIVES[name]()
    fresh_native.load_state_dict(twin.state_dict(), strict=True)
    fresh_twin = twin_type.from_native(NATIVES[name]())
    fresh_twin.load_state_dict(native.state_dict(), strict=True)
    back = twin.to_native()
    assert type(back) is type(native)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in n_state.items())
    assert type(to_native(to_gnn(native))) is type(native)


@pytest.mark.parametrize("name", ["mha", "mha-kdim-vdim-nobias", "encoder-layer",
                                  "decoder-layer", "transformer"])
def test_same_initialization_as_torch(name: str) -> None:
    builders = {
        "mha": lambda t: t(8, 2), "mha-kdim-vdim-nobias":
            lambda t: t(8, 2, bias=False, kdim=3, vdim=5),
        "encoder-layer": lambda t: t(8, 2, 16), "decoder-layer": lambda t: t(8, 2, 16),
        "transformer": lambda t: t(8, 2, 1, 1, 16),
    }
    native_type = type(NATIVES[name]())
    twin_type = TWIN_TYPES[name]
    torch.manual_seed(3)
    native = builders[name](native_type)
    torch.manual_seed(3)
    twin = builders[name](twin_type)
    for key, value in native.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key


def test_to_gnn_on_model_with_encoder() -> None:
    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(6, 16)
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation="gelu",
                                           batch_first=True), 2, nn.LayerNorm(16))
            self.head = nn.Linear(16, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.encoder(self.embed(x))[:, 0])

    model = _randomize(Classifier(), 11).eval()
    twin = to_gnn(model)
    assert isinstance(twin.encoder, TransformerEncoderAsGNN)
    assert isinstance(twin.embed, LinearAsGNN)
    assert isinstance(twin.encoder.layers[1].self_attn, MultiHeadSelfAttentionAsGNN)
    x = torch.randn(4, 9, 6)
    _assert_close(compare(model, twin, (x,)), torch.float32)
    with torch.no_grad():
        _assert_close(compare(model, twin, (x,), backward=False), torch.float32,
                      backward=False)
    back = to_native(twin)
    assert type(back.encoder) is nn.TransformerEncoder
    assert type(back.encoder.layers[0].self_attn) is nn.MultiheadAttention
    _assert_close(compare(model, back, (x,)), torch.float32)


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_no_torch_attention_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("the twin called a torch attention kernel")
    for owner, name in ((F, "multi_head_attention_forward"),
                        (F, "scaled_dot_product_attention"),
                        (torch, "_native_multi_head_attention"),
                        (torch, "_transformer_encoder_layer_fwd")):
        monkeypatch.setattr(owner, name, forbidden)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    models = [to_gnn(nn.MultiheadAttention(8, 2, batch_first=True)).eval(),
              to_gnn(nn.TransformerEncoder(layer, 2)).eval(),
              to_gnn(nn.Transformer(8, 2, 1, 1, 16, batch_first=True)).eval()]
    x = torch.randn(2, 5, 8)
    kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    recorder = _OpRecorder()
    with recorder:
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                outs = [models[0](x, x, x, key_padding_mask=kpm, need_weights=False)[0],
                        models[1](x, src_key_padding_mask=kpm),
                        models[2](x, x, src_key_padding_mask=kpm)]
            if grad:
                sum(o.sum() for o in outs).backward()
    kernels = [op for op in recorder.ops
               if any(k in op for k in ("attention", "transformer", "nested"))]
    assert not kernels, kernels


# -- bad inputs ----------------------------------------------------------------------------
def test_bad_inputs_name_expected_and_actual() -> None:
    attn = MultiHeadCrossAttentionAsGNN(8, 2, kdim=6)
    q, k = torch.randn(4, 2, 8), torch.randn(5, 2, 6)
    with pytest.raises(AssertionError, match=r"embedding dimension of 8 for query, but got 7"):
        attn(torch.randn(4, 2, 7), k, torch.randn(5, 2, 8))
    with pytest.raises(AssertionError, match=r"embedding dimension of 6 for key, but got 8"):
        attn(q, torch.randn(5, 2, 8), torch.randn(5, 2, 8))
    with pytest.raises(AssertionError, match=r"3-D .* found 2-D and 3-D"):
        attn(q, torch.randn(5, 6), torch.randn(5, 2, 8))
    with pytest.raises(AssertionError, match=r"unbatched 2D or batched 3D .* 4-D"):
        attn(torch.randn(1, 4, 2, 8), k, k)
    v = torch.randn(5, 2, 8)
    with pytest.raises(AssertionError, match=r"key_padding_mask of shape \(2, 5\), got \(2, 4\)"):
        attn(q, k, v, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match=r"attn_mask of shape \(4, 5\) or \(4, 4, 5\), "
                                           r"got \(5, 5\)"):
        attn(q, k, v, attn_mask=torch.zeros(5, 5, dtype=torch.bool))
    with pytest.raises(AssertionError, match="only bool and floating types"):
        attn(q, k, v, attn_mask=torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(AssertionError, match="batch size 2 .* got 3"):
        attn(q, torch.randn(5, 3, 6), torch.randn(5, 3, 8))
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        MultiHeadCrossAttentionAsGNN(8, 3)
    with pytest.raises(TypeError, match="expects MultiheadAttention, got Linear"):
        MultiHeadCrossAttentionAsGNN.from_native(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="expects TransformerEncoderLayer, got"):
        TransformerEncoderLayerAsGNN.from_native(nn.TransformerDecoderLayer(8, 2))
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        TransformerEncoderLayerAsGNN(8, 2, activation="tanh")
    model = TransformerAsGNN(8, 2, 1, 1, 16)
    with pytest.raises(RuntimeError, match=r"d_model=8, got 6 and 8"):
        model(torch.randn(3, 2, 6), torch.randn(3, 2, 8))
    with pytest.raises(RuntimeError, match="batch number of src and tgt must be equal, got 2 "
                                           "and 3"):
        model(torch.randn(3, 2, 8), torch.randn(3, 3, 8))


def test_repr_shows_hyper_parameters() -> None:
    text = repr(MultiHeadCrossAttentionAsGNN(8, 2, dropout=0.1, kdim=3, batch_first=True))
    assert "embed_dim=8, num_heads=2, dropout=0.1, kdim=3, vdim=8, batch_first=True" in text
    assert "LinearAsGNN" in text or "out_proj" in text
