"""The equivalence cases of every component, and the self-check entry points.

``python -m modules`` checks them all in one table; ``python -m modules.<File>`` (e.g.
``python -m modules.ConvAsGNN``, the original release's file names, now small packages
whose ``__main__`` calls :func:`main`) checks that file's components. Each case is a native
module builder and its inputs, run by ``modules.equivalence`` with the original protocol.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from modules.equivalence import Case, add_check_args, run_cases
from modules.linear import MLPAsGNN
from utils.cli import HelpFormatter, checked_device


def linear_cases() -> list[Case]:
    """Representative Linear/MLP setups for the original equivalence protocol."""
    return [
        Case("Linear 784->250", lambda: nn.Linear(784, 250), (784,)),
        Case("Linear 32->10, no bias", lambda: nn.Linear(32, 10, bias=False), (32,)),
        Case("Linear 128->512 on 17 tokens", lambda: nn.Linear(128, 512), (17, 128)),
        Case("MLP 784-250-100-10 relu",
             lambda: MLPAsGNN(784, [250, 100], 10).to_native(), (784,)),
        Case("MLP 64-128-8 gelu",
             lambda: MLPAsGNN(64, 128, 8, activation="gelu").to_native(), (64,)),
    ]


def conv_cases() -> list[Case]:
    """Representative convolutions (CWRU, VGG, ResNet layers and every padding form)."""
    return [
        Case("Conv1d 1->16 k64 s16 p24 (CWRU)",
             lambda: nn.Conv1d(1, 16, 64, stride=16, padding=24), (1, 2048), chunk=250),
        Case("Conv1d 16->32 k3 p1 (CWRU)", lambda: nn.Conv1d(16, 32, 3, padding=1), (16, 64)),
        Case("Conv1d 4->6 k4 same reflect dil2",
             lambda: nn.Conv1d(4, 6, 4, padding="same", dilation=2, padding_mode="reflect"),
             (4, 19)),
        Case("Conv2d 3->64 k3 p1 (VGG)", lambda: nn.Conv2d(3, 64, 3, padding=1), (3, 32, 32),
             chunk=100),
        Case("Conv2d 3->64 k7 s2 p3 (ResNet stem)",
             lambda: nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), (3, 32, 32),
             chunk=100),
        Case("Conv2d 16->32 k1 s2 (downsample)",
             lambda: nn.Conv2d(16, 32, 1, stride=2, bias=False), (16, 8, 8)),
        Case("Conv2d 8->8 k(2,3) groups 4 circular",
             lambda: nn.Conv2d(8, 8, (2, 3), padding=(1, 1), groups=4,
                               padding_mode="circular"), (8, 7, 6)),
        Case("Conv2d 6->4 k3 s(2,1) replicate dil(1,2)",
             lambda: nn.Conv2d(6, 4, 3, stride=(2, 1), padding=2, dilation=(1, 2),
                               padding_mode="replicate"), (6, 9, 11)),
        Case("Conv2d 64->64 k3 p1 on 8x8", lambda: nn.Conv2d(64, 64, 3, padding=1),
             (64, 8, 8), chunk=250),
    ]


def pooling_cases() -> list[Case]:
    """Representative poolings (CWRU, VGG, ResNet) and the odd corners."""
    return [
        Case("MaxPool1d 2 (CWRU)", lambda: nn.MaxPool1d(2, 2), (16, 128)),
        Case("MaxPool2d 2 (VGG)", lambda: nn.MaxPool2d(2, 2), (64, 32, 32), chunk=100),
        Case("MaxPool2d 3 s2 p1 (ResNet)", lambda: nn.MaxPool2d(3, 2, 1), (64, 16, 16),
             chunk=100),
        Case("MaxPool2d 3 s2 dil2 ceil", lambda: nn.MaxPool2d(3, 2, 1, dilation=2,
                                                               ceil_mode=True), (4, 11, 10)),
        Case("AvgPool1d 4 s3 p2 ceil no pad count",
             lambda: nn.AvgPool1d(4, 3, 2, ceil_mode=True, count_include_pad=False), (4, 23)),
        Case("AvgPool2d 3 s2 p1 ceil", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True),
             (4, 12, 9)),
        Case("AvgPool2d 2 divisor 3", lambda: nn.AvgPool2d(2, divisor_override=3), (4, 8, 8)),
        Case("AdaptiveAvgPool1d 7", lambda: nn.AdaptiveAvgPool1d(7), (4, 30)),
        Case("AdaptiveAvgPool2d 1 (ResNet head)", lambda: nn.AdaptiveAvgPool2d(1),
             (512, 2, 2), chunk=250),
        Case("AdaptiveAvgPool2d (3,5)", lambda: nn.AdaptiveAvgPool2d((3, 5)), (4, 10, 11)),
        Case("AdaptiveMaxPool2d (4,None)", lambda: nn.AdaptiveMaxPool2d((4, None)),
             (4, 9, 7)),
    ]


def _tokens(n: int, length: int, dim: int, batch_first: bool, gen: torch.Generator,
            dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.randn((n, length, dim), generator=gen, dtype=dtype)
    x = x if batch_first else x.transpose(0, 1).contiguous()
    return x.to(device)


def _padding(n: int, length: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """Right padding, at least one real token per sample (no fully masked row)."""
    lengths = torch.randint(1, length + 1, (n, 1), generator=gen)
    return (torch.arange(length)[None, :] >= lengths).to(device)


def _quiet_one_thread(call: Callable[[nn.Module, tuple], Tensor],
                      ) -> Callable[[nn.Module, tuple], Tensor]:
    """Run a check call on one thread, without torch's prototype warning. The samples are
    tiny, and torch's nested-tensor encoder path (the native side) runs one small parallel
    region per sample: on a shared CPU, more threads made it up to 100x slower; that path
    warns about its prototype API on every call."""
    def run(module: nn.Module, inputs: tuple) -> Tensor:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")
                return call(module, inputs)
        finally:
            torch.set_num_threads(threads)
    return run


def _with_weights(out: tuple[Tensor, Tensor | None]) -> Tensor:
    """Attention output and weights as one tensor, so both are checked."""
    y, w = out
    if w is None:
        return y
    return torch.cat([y.reshape(-1), w.reshape(-1)])


def _attention_and_transformer_cases() -> tuple[list[Case], list[Case]]:
    """Attention and Transformer setups for the original equivalence protocol."""
    e, h, L, S = 16, 4, 7, 5

    def self_inputs(batch_first: bool, padding: bool) -> Callable[..., tuple]:
        def make(n, gen, dtype, device):
            x = _tokens(n, L, e, batch_first, gen, dtype, device)
            return (x, _padding(n, L, gen, device) if padding else None)
        return make

    causal = nn.Transformer.generate_square_subsequent_mask(L).bool()

    def self_call(mask: bool, need_weights: bool = False) -> Callable:
        return lambda m, xs: _with_weights(m(
            xs[0], xs[0], xs[0], key_padding_mask=xs[1],
            attn_mask=causal.to(xs[0].device) if mask else None,
            is_causal=mask, need_weights=need_weights))

    def cross_inputs(n, gen, dtype, device):
        q = _tokens(n, L, e, False, gen, dtype, device)
        k = _tokens(n, S, 12, False, gen, dtype, device)
        v = _tokens(n, S, 10, False, gen, dtype, device)
        return q, k, v, _padding(n, S, gen, device)

    def seq2seq_inputs(batch_first: bool) -> Callable[..., tuple]:
        def make(n, gen, dtype, device):
            src = _tokens(n, S, e, batch_first, gen, dtype, device)
            tgt = _tokens(n, L, e, batch_first, gen, dtype, device)
            return src, tgt, _padding(n, S, gen, device)
        return make

    tgt_causal = nn.Transformer.generate_square_subsequent_mask(L)

    def mha(batch_first: bool = True) -> Callable[[], nn.Module]:
        return lambda: nn.MultiheadAttention(e, h, batch_first=batch_first)

    def enc_layer(norm_first: bool, batch_first: bool) -> Callable[[], nn.Module]:
        return lambda: nn.TransformerEncoderLayer(e, h, 32, dropout=0.1, activation="gelu",
                                                  batch_first=batch_first,
                                                  norm_first=norm_first)

    def dec_layer(norm_first: bool) -> Callable[[], nn.Module]:
        return lambda: nn.TransformerDecoderLayer(e, h, 32, dropout=0.1,
                                                  norm_first=norm_first)

    attention = [
        Case("MHA self-attn E16 h4 L7, no mask (+weights)", mha(),
             make_inputs=self_inputs(True, False), call=self_call(False, need_weights=True)),
        Case("MHA self-attn causal", mha(False), make_inputs=self_inputs(False, False),
             call=self_call(True)),
        Case("MHA self-attn key padding", mha(), make_inputs=self_inputs(True, True),
             call=self_call(False)),
        Case("MHA self-attn causal + key padding (+weights)", mha(False),
             make_inputs=self_inputs(False, True), call=self_call(True, need_weights=True)),
        Case("MHA cross-attn L7 S5 kdim12 vdim10 (+weights)",
             lambda: nn.MultiheadAttention(e, h, kdim=12, vdim=10),
             make_inputs=cross_inputs,
             call=lambda m, xs: _with_weights(m(*xs[:3], key_padding_mask=xs[3],
                                                 average_attn_weights=False))),
    ]
    transformer = [
        Case("EncoderLayer post-norm gelu (batch-first)", enc_layer(False, True),
             make_inputs=self_inputs(True, True),
             call=lambda m, xs: m(xs[0], src_key_padding_mask=xs[1])),
        Case("EncoderLayer pre-norm gelu causal", enc_layer(True, False),
             make_inputs=self_inputs(False, False),
             call=lambda m, xs: m(xs[0], src_mask=tgt_causal.to(xs[0]), is_causal=True)),
        Case("DecoderLayer post-norm", dec_layer(False), make_inputs=seq2seq_inputs(False),
             call=lambda m, xs: m(xs[1], xs[0], tgt_mask=tgt_causal.to(xs[1]),
                                  memory_key_padding_mask=xs[2], tgt_is_causal=True)),
        Case("DecoderLayer pre-norm", dec_layer(True), make_inputs=seq2seq_inputs(False),
             call=lambda m, xs: m(xs[1], xs[0], memory_key_padding_mask=xs[2])),
        Case("Encoder x2 + norm, key padding (nested)",
             lambda: nn.TransformerEncoder(enc_layer(False, True)(), 2, nn.LayerNorm(e)),
             make_inputs=self_inputs(True, True),
             call=lambda m, xs: m(xs[0], src_key_padding_mask=xs[1])),
        Case("Transformer 2+2 layers, causal tgt",
             lambda: nn.Transformer(e, h, 2, 2, 32, batch_first=True),
             make_inputs=seq2seq_inputs(True),
             call=lambda m, xs: m(xs[0], xs[1], tgt_mask=tgt_causal.to(xs[1]),
                                  src_key_padding_mask=xs[2],
                                  memory_key_padding_mask=xs[2])),
    ]
    for case in attention + transformer:
        case.chunk = 2500  # tiny samples: fewer, larger batches
        case.call = _quiet_one_thread(case.call)
    return attention, transformer


def attention_cases() -> list[Case]:
    """Self- and cross-attention setups."""
    return _attention_and_transformer_cases()[0]


def transformer_cases() -> list[Case]:
    """Transformer layer, stack and full-model setups."""
    return _attention_and_transformer_cases()[1]


#: component file -> its cases, in the order of the one table
COMPONENTS: dict[str, Callable[[], list[Case]]] = {
    "MLPAsGNN": linear_cases,
    "ConvAsGNN": conv_cases,
    "PoolingAsGNN": pooling_cases,
    "MultiHeadSelfAttentionAsGNN": attention_cases,
    "TransformerAsGNN": transformer_cases,
}


def check_cases(component: str | None = None) -> list[Case]:
    """The cases of one component file, or of all of them."""
    if component is None:
        return [case for cases in COMPONENTS.values() for case in cases()]
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of "
                         f"{sorted(COMPONENTS)}")
    return COMPONENTS[component]()


def main(component: str | None = None, argv: Sequence[str] | None = None) -> int:
    """Command line of ``python -m modules`` (every component) and
    ``python -m modules.<File>`` (one component file)."""
    prog = "python -m modules" + ("" if component is None else f".{component}")
    what = "every message-passing component" if component is None else \
        f"each message-passing twin of modules.{component}"
    parser = add_check_args(argparse.ArgumentParser(
        prog=prog, description=f"Check {what} against torch.nn with the original protocol "
        "(random N(0,1) inputs, identical parameters); exit 1 if any MAE >= 1e-6.",
        formatter_class=HelpFormatter))
    args = parser.parse_args(argv)
    args.device = checked_device(parser, args.device)
    return run_cases(check_cases(component), args)
