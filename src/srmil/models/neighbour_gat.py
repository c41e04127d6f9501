r"""The fast exact path of :class:`~srmil.models.layers.GATLayer`: attention on a padded
neighbour table (:mod:`srmil.graphs.neighbours`) instead of per-edge message passing.

Same parameters, same maths as the PyG path (``GATConv`` with ``add_self_loops=False`` plus the
layer's bias, residual, LayerNorm and PReLU); only the memory layout differs:

- node rows are projected once, :math:`h' = W\tilde h` (the residual projection rides in the
  same matrix product);
- attention logits :math:`e_{ik} = \mathrm{LeakyReLU}(a_s^\top h'_{n(i,k)} + a_d^\top h'_i)`
  live in an (M, K, H) tensor, −∞ on padding slots, softmax over the K slots;
- the aggregation :math:`o_i = \sum_k \alpha_{ik} h'_{n(i,k)}` is K gathers of node rows
  accumulated in place (:class:`NeighbourSum`); its backward pass is the same gather over the
  transposed table, so no (E, H·F) tensor exists in the forward or the backward pass;
- a supernode joined to every patch in both directions (without self loop) is one dense row:
  an extra slot in each patch's softmax, and a softmax over all N patches for its own row;
- several graphs with the same structure (SRMIL's three encoder passes) are stacked as one
  batch of B·N rows: one matrix product per layer, independent dropout draws per pass;
- a single-head layer to D dims with no residual (the decoder's output layer) aggregates
  first and projects after, :math:`\sum_k \alpha_{ik} W h_{n(i,k)} = W \sum_k \alpha_{ik}
  h_{n(i,k)}`, with logits from :math:`(W^\top a)\cdot h`, and projects only the rows asked for.

Dropout draws differ from the PyG path's (slots, not edges, are drawn), with the same
distribution. The equality of both paths is tested at zero dropout and in eval mode
(``tests/models/test_neighbour_gat.py``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srmil.graphs.neighbours import NeighbourTable
from srmil.models.layers import GATLayer

log = logging.getLogger(__name__)


@dataclass
class StackedTable:
    """A :class:`NeighbourTable` repeated for B graphs stacked as B·N rows.

    Attributes:
        index, valid: (B·N, K) in-slots with row offsets b·N.
        out_index, out_slot: (B·N, K') out-slots (slots index the (B·N·K) flattened slots;
            padding holds B·N·K).
        batches: B.
        nodes: N per graph.
        isolated: some node has no in-edge.
        kernels: ``auto``, ``compiled`` or ``eager`` (see :func:`_sddmm`).
    """

    index: Tensor
    valid: Tensor
    out_index: Tensor
    out_slot: Tensor
    batches: int
    nodes: int
    isolated: bool = False
    kernels: str = "auto"

    @classmethod
    def of(cls, table: NeighbourTable, batches: int, kernels: str = "auto") -> StackedTable:
        n, k = table.num_nodes, table.width
        isolated = table.isolated
        if batches == 1:
            return cls(table.index, table.valid, table.out_index, table.out_slot, 1, n, isolated,
                       kernels)
        off = (torch.arange(batches, device=table.index.device) * n).repeat_interleave(n)
        off = off[:, None]  # (B·N, 1)
        index = table.index.repeat(batches, 1) + off  # (B·N, K)
        out_index = table.out_index.repeat(batches, 1) + off  # (B·N, K')
        pad = table.out_slot == n * k  # (N, K')
        out_slot = table.out_slot.repeat(batches, 1) + off * k  # (B·N, K')
        out_slot = out_slot.masked_fill(pad.repeat(batches, 1), batches * n * k)
        return cls(index, table.valid.repeat(batches, 1), out_index, out_slot, batches, n,
                   isolated, kernels)


def _csr(values: Tensor, index: Tensor, n_cols: int) -> Tensor:
    """The (M, n_cols) sparse CSR matrix with K entries per row: ``values[i, k]`` in column
    ``index[i, k]`` (padding slots are explicit zeros)."""
    m, k = index.shape
    crow = torch.arange(0, m * k + 1, k, device=index.device)  # (M + 1,)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": not the user's concern
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, index.reshape(-1), values.reshape(-1), (m, n_cols))


def _spmm(values: Tensor, index: Tensor, x: Tensor) -> Tensor:
    """``out[h, i] = Σ_k values[i, k, h] · x[h, index[i, k]]``: (M, K, H), (H, M', F) -> (H, M, F).

    One sparse CSR × dense product per head (MKL on the CPU, cuSPARSE on a GPU), so the K
    neighbour rows are read inside one fused loop, never copied out.
    """
    return torch.stack([torch.sparse.mm(_csr(values[..., h].contiguous(), index, x.shape[1]),
                                        x[h]) for h in range(x.shape[0])])


def _sddmm_eager(index: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Sampled product, one gather per slot: (M, K), (H, M, F), (H, M', F) -> (H, M, K)."""
    return torch.stack([(a * b.index_select(1, index[:, k])).sum(-1)
                        for k in range(index.shape[1])], dim=-1)


def _sddmm_fused(index: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """The same product written whole, for Inductor to fuse into one loop without the
    (H, M, K, F) gather ever being stored."""
    return (a[:, :, None, :] * b[:, index]).sum(-1)


_compiled: dict[str, object] = {}
COMPILE_FROM = 2048  # rows (stacked nodes) from which "auto" uses the compiled kernel


def _sddmm(index: Tensor, a: Tensor, b: Tensor, kernels: str = "auto") -> Tensor:
    r"""``out[i, k, h] = a[h, i] · b[h, index[i, k]]``: (M, K), (H, M, F), (H, M', F) -> (M, K, H).

    The sampled dense-dense product (the table's entries of :math:`a b^\top`, per head), the
    one step of the GAT backward pass no sparse library kernel does fast on the CPU (torch's
    ``sampled_addmm`` forms the dense product there). ``kernels``: ``compiled`` fuses it with
    ``torch.compile`` (Inductor writes a C++ loop with the machine's compiler; the first call
    in a process takes seconds, then ≈ 80× faster than ``eager`` at 30,000 rows); ``eager``
    gathers one slot at a time; ``auto`` compiles on the CPU from ``COMPILE_FROM`` rows and
    falls back to eager for good (with a warning) if compiling fails.
    """
    use = kernels
    if kernels == "auto":
        use = "compiled" if (a.device.type == "cpu" and index.shape[0] >= COMPILE_FROM
                             and _compiled.get("failed") is None) else "eager"
    if use == "compiled":
        try:
            fn = _compiled.get("sddmm")
            if fn is None:
                # torch warns "No CUDA runtime is found" while compiling on a CPU-only machine
                logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
                fn = _compiled["sddmm"] = torch.compile(_sddmm_fused, dynamic=True,
                                                        fullgraph=True)
            out = fn(index, a, b)
        except Exception as exc:  # no C++ compiler, unsupported platform: stay exact, go eager
            if kernels == "compiled":
                raise
            _compiled["failed"] = exc
            log.warning("torch.compile of the attention backward failed (%s); using the "
                        "eager kernel", str(exc).splitlines()[0] if str(exc) else type(exc))
            out = _sddmm_eager(index, a, b)
    else:
        out = _sddmm_eager(index, a, b)
    return out.permute(1, 2, 0)  # (M, K, H)


class NeighbourSum(torch.autograd.Function):
    r"""``o_i = Σ_k α_ik x_{n(i,k)}`` per head as sparse products, memory-lean in both passes.

    Saves only its inputs. Backward: :math:`\partial x = A^\top \partial o` through the
    transposed table (again one sparse product per head) and :math:`\partial\alpha_{ik} =
    \partial o_i \cdot x_{n(i,k)}` as a sampled product; no (M, K, H, F) tensor exists.
    Half-precision inputs are computed in float32 (sparse kernels want it) and cast back.
    """

    @staticmethod
    def forward(ctx, alpha: Tensor, x: Tensor, index: Tensor, out_index: Tensor,
                out_slot: Tensor, kernels: str = "auto") -> Tensor:
        ctx.kernels = kernels
        dtype = x.dtype
        work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        alpha, x = alpha.to(work), x.to(work)
        ctx.save_for_backward(alpha, x, index, out_index, out_slot)
        ctx.dtypes = (dtype, alpha.dtype)
        return _spmm(alpha, index, x).to(dtype)  # (H, M, F)

    @staticmethod
    def backward(ctx, grad: Tensor):
        alpha, x, index, out_index, out_slot = ctx.saved_tensors
        x_dtype, _ = ctx.dtypes
        grad = grad.to(x.dtype).contiguous()  # (H, M, F)
        g_alpha = g_x = None
        if ctx.needs_input_grad[0]:
            g_alpha = _sddmm(index, grad, x, ctx.kernels)  # (M, K, H)
        if ctx.needs_input_grad[1]:
            m, k, h = alpha.shape
            flat = torch.cat([alpha.reshape(m * k, h), alpha.new_zeros(1, h)])  # (M·K + 1, H)
            g_x = _spmm(flat[out_slot], out_index, grad).to(x_dtype)  # (H, M', F)
        return g_alpha, g_x, None, None, None, None


def neighbour_sum(alpha: Tensor, x: Tensor, table: StackedTable) -> Tensor:
    """Attention-weighted sum over in-slots, head-major: (M, K, H), (H, M, F) -> (H, M, F)."""
    return NeighbourSum.apply(alpha, x.contiguous(), table.index, table.out_index,
                              table.out_slot, table.kernels)


def _softmax_slots(logits: Tensor, valid: Tensor | None, p: float, training: bool,
                   isolated: bool = False) -> Tensor:
    """Softmax over dim 1 (slots or nodes), at least in float32, then attention dropout.

    Args:
        logits: (M, K, H) attention logits.
        valid: (M, K) False on padding slots (weight 0), or ``None``.
        p: attention dropout.
        training: apply the dropout.
        isolated: some row has no valid slot; its weights are all 0 (PyG: a node without
            in-edges receives nothing) instead of NaN.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if valid is not None:
        logits = logits.masked_fill(~valid[:, :, None], -torch.inf)
        if isolated:
            logits = logits.masked_fill(~valid.any(1)[:, None, None], 0.0)
    alpha = torch.softmax(logits, dim=1)
    if valid is not None and isolated:
        alpha = alpha * valid[:, :, None]
    return _dropout(alpha, p, training)


@dataclass
class Supernodes:
    """Supernode rows of the stacked graphs.

    Attributes:
        h: (S, F_in) the supernodes' features, one per graph that has one.
        graphs: the S indices (into the B stacked graphs) of those graphs, in order.
    """

    h: Tensor
    graphs: tuple[int, ...]


def _dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout that keeps a bool mask for backward (``F.dropout`` keeps a float one on the CPU)."""
    if not training or p == 0.0:
        return x
    return torch.native_dropout(x, p, True)[0]


@dataclass
class PassInputs:
    """The inputs of B stacked graphs given by their distinct sources, never stacked in memory.

    SRMIL's three encoder passes read two sources (masked, complete): the first layer drops
    out and projects each pass straight from its source, so no (B·N, D) copy, dropped copy
    or float dropout mask is kept (:class:`DropoutLinear`).

    Attributes:
        sources: distinct (N, F_in) inputs.
        which: the source of each of the B graphs.
    """

    sources: tuple[Tensor, ...]
    which: tuple[int, ...]

    def stacked(self) -> Tensor:
        """(B·N, F_in): the inputs as one tensor."""
        return torch.cat([self.sources[i] for i in self.which])


class DropoutLinear(torch.autograd.Function):
    """``out_b = dropout_b(x_{s(b)}) Wᵀ`` for B stacked graphs from their sources, split by
    output columns into separate contiguous tensors.

    Saves the sources and one bool mask per graph; the dropped inputs are recomputed one
    graph at a time in backward, so the largest temporary is one (N, F_in) block, and the
    split outputs need no zero-filled full-width gradient in backward.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, p: float, which: tuple[int, ...], splits: tuple[int, ...],
                *sources: Tensor) -> tuple[Tensor, ...]:
        n = sources[0].shape[0]
        drop = p > 0.0
        scale = 1.0 / (1.0 - p) if drop else 1.0
        masks = [torch.empty_like(sources[s], dtype=torch.bool).bernoulli_(1.0 - p)
                 for s in which] if drop else []
        bounds = np.cumsum((0, *splits)).tolist()
        outs = [sources[0].new_empty(len(which) * n, k) for k in splits]
        for b, s in enumerate(which):
            x = sources[s] * masks[b] * scale if drop else sources[s]  # (N, F_in)
            for out, lo, hi in zip(outs, bounds[:-1], bounds[1:], strict=True):
                torch.mm(x, weight[lo:hi].t(), out=out[b * n:(b + 1) * n])
        ctx.save_for_backward(weight, *sources, *masks)
        ctx.meta = (which, bounds, scale, drop, len(sources))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor | None):
        which, bounds, scale, drop, n_src = ctx.meta
        weight, *rest = ctx.saved_tensors
        sources, masks = rest[:n_src], rest[n_src:]
        n = sources[0].shape[0]
        g_w = torch.zeros_like(weight) if ctx.needs_input_grad[0] else None
        g_src: list[Tensor | None] = [None] * n_src
        parts = [(g, lo, hi) for g, lo, hi in zip(grads, bounds[:-1], bounds[1:], strict=True)
                 if g is not None]
        for b, s in enumerate(which):
            rows = slice(b * n, (b + 1) * n)
            if g_w is not None:
                x = sources[s] * masks[b] * scale if drop else sources[s]
                for g, lo, hi in parts:
                    g_w[lo:hi].addmm_(g[rows].t(), x)  # (O_k, F_in)
            if ctx.needs_input_grad[4 + s]:
                gx = None
                for g, lo, hi in parts:
                    gx = g[rows] @ weight[lo:hi] if gx is None else gx.addmm_(
                        g[rows], weight[lo:hi])  # (N, F_in)
                if gx is None:
                    continue
                if drop:
                    gx = gx.mul_(masks[b]).mul_(scale)
                g_src[s] = gx if g_src[s] is None else g_src[s].add_(gx)
        return (g_w, None, None, None, *g_src)


@dataclass
class MaskedSources:
    """SRMIL's passes given as the complete rows, the token and the mask, for a first layer
    whose dropout mask all passes share (``SRMILConfig.share_projection``, an approximation).

    The masked source is ``full`` with rows ``mask`` replaced by ``token``; with one dropout
    mask for every pass, its projection equals the complete source's on the kept rows, so only
    N + K rows are projected instead of B·N (:class:`SharedDropoutLinear`).

    Attributes:
        full: (N, F_in) complete rows.
        token: (1, F_in) the row that replaces each masked row.
        mask: (K,) int64 masked row indices.
        which: the source of each of the B graphs: 0 masked, 1 complete.
    """

    full: Tensor
    token: Tensor
    mask: Tensor
    which: tuple[int, ...]

    def stacked(self) -> Tensor:
        """(B·N, F_in): the inputs as one tensor."""
        keep = torch.ones(self.full.shape[0], dtype=torch.bool, device=self.full.device)
        keep[self.mask] = False
        masked = torch.where(keep[:, None], self.full, self.token)  # (N, F_in)
        return torch.cat([(masked, self.full)[i] for i in self.which])


class SharedDropoutLinear(torch.autograd.Function):
    """``dropout(x_{s(b)}) Wᵀ`` for the graphs of :class:`MaskedSources` with ONE dropout mask
    shared by all of them: the complete rows (N) and the masked rows' token copies (K) are
    projected once each and the B output blocks are assembled from them, so the product costs
    N + K rows instead of B·N (for SRMIL's three passes at mask rate 0.7: 1.7·N, not 3·N).
    Outputs are split by columns like :class:`DropoutLinear`'s."""

    @staticmethod
    def forward(ctx, weight: Tensor, p: float, which: tuple[int, ...], splits: tuple[int, ...],
                full: Tensor, token: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        n = full.shape[0]
        drop = p > 0.0
        scale = 1.0 / (1.0 - p) if drop else 1.0
        m = torch.empty_like(full, dtype=torch.bool).bernoulli_(1.0 - p) if drop else None
        xf = full * m * scale if drop else full  # (N, F_in)
        xt = token.expand(mask.numel(), -1)  # (K, F_in)
        xt = xt * m[mask] * scale if drop else xt
        pf, pt = xf @ weight.t(), xt @ weight.t()  # (N, O), (K, O)
        pm = pf.index_copy(0, mask, pt)  # (N, O) the masked source's projection
        bounds = np.cumsum((0, *splits)).tolist()
        outs = tuple(torch.cat([(pm, pf)[s][:, lo:hi] for s in which])
                     for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))  # (B·N, O_k)
        ctx.save_for_backward(weight, full, token, mask, *([m] if drop else []))
        ctx.meta = (which, bounds, scale, drop, n)
        return outs

    @staticmethod
    def backward(ctx, *grads: Tensor | None):
        which, bounds, scale, drop, n = ctx.meta
        weight, full, token, mask, *m = ctx.saved_tensors
        m = m[0] if drop else None
        cols = weight.shape[0]
        g = [full.new_zeros(n, cols), full.new_zeros(n, cols)]  # per source: masked, complete
        for gk, lo, hi in zip(grads, bounds[:-1], bounds[1:], strict=True):
            if gk is None:
                continue
            for b, s in enumerate(which):
                g[s][:, lo:hi] += gk[b * n:(b + 1) * n]
        g_t = g[0][mask]  # (K, O) the token rows
        g_f = g[1].add_(g[0].index_fill_(0, mask, 0.0))  # (N, O) the complete rows
        xf = full * m * scale if drop else full
        xt = token.expand(mask.numel(), -1)
        xt = xt * m[mask] * scale if drop else xt
        g_w = g_f.t() @ xf + g_t.t() @ xt if ctx.needs_input_grad[0] else None
        g_full = g_token = None
        if ctx.needs_input_grad[4]:
            g_full = g_f @ weight  # (N, F_in)
            g_full = g_full.mul_(m).mul_(scale) if drop else g_full
        if ctx.needs_input_grad[5]:
            gt = g_t @ weight  # (K, F_in)
            gt = gt.mul_(m[mask]).mul_(scale) if drop else gt
            g_token = gt.sum(0, keepdim=True)  # (1, F_in)
        return g_w, None, None, None, g_full, g_token, None


def _project(layer: GATLayer, h: Tensor | PassInputs | MaskedSources, p: float,
             training: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    r"""Dropout, then projection, residual and attention logit parts, in one pass.

    The logit parts :math:`a^\top W h = (W^\top a)^\top h` are 2H extra output rows of the
    weight, so no (M, H, F) product with the attention vectors is formed or kept.

    Args:
        layer: the layer.
        h: (M, F_in) rows, or the sources of stacked graphs.
        p: feature dropout.
        training: apply it.

    Returns:
        proj (M, H·F), residual (M, H·F) or ``None``, logit parts (M, 2, H): source, target.
    """
    heads, fo = layer.heads, layer.out_dim
    w = layer.conv.lin.weight  # (H·F, F_in)
    att = torch.cat([layer.conv.att_src, layer.conv.att_dst]).view(2 * heads, fo)  # (2H, F)
    w_att = torch.einsum("xf,xfi->xi", att, w.view(heads, fo, -1).repeat(2, 1, 1))  # (2H, F_in)
    p = p if training else 0.0
    if isinstance(layer.res, nn.Identity):  # the residual is the dropped input itself
        hd = _dropout(h.stacked() if isinstance(h, PassInputs | MaskedSources) else h, p, True)
        out = hd @ torch.cat([w, w_att]).t()  # (M, H·F + 2H)
        return out[:, : w.shape[0]], hd, out[:, w.shape[0]:].reshape(-1, 2, heads)
    if isinstance(h, MaskedSources):
        w_all = torch.cat([w, layer.res.weight, w_att] if isinstance(layer.res, nn.Linear)
                          else [w, w_att])
        splits = ((w.shape[0],) * (2 if isinstance(layer.res, nn.Linear) else 1)
                  + (2 * heads,))
        *proj_res, a = SharedDropoutLinear.apply(w_all, p, h.which, splits, h.full, h.token,
                                                 h.mask)
        return proj_res[0], (proj_res[1] if len(proj_res) == 2 else None), a.view(-1, 2, heads)
    src = h if isinstance(h, PassInputs) else PassInputs((h,), (0,))
    if isinstance(layer.res, nn.Linear):
        proj, res, a = DropoutLinear.apply(torch.cat([w, layer.res.weight, w_att]), p,
                                           src.which, (w.shape[0], w.shape[0], 2 * heads),
                                           *src.sources)
    else:
        proj, a = DropoutLinear.apply(torch.cat([w, w_att]), p, src.which,
                                      (w.shape[0], 2 * heads), *src.sources)
        res = None
    return proj, res, a.view(-1, 2, heads)


def _finish(layer: GATLayer, out: Tensor, res: Tensor | None) -> Tensor:
    """Bias, residual, LayerNorm and PReLU, in the reference order."""
    out = out + layer.bias
    if res is not None:
        out = out + res
    if layer.norm is not None:
        out = layer.norm(out)
    if layer.act is not None:
        out = layer.act(out)
    return out


def gat_layer(
    layer: GATLayer, h: Tensor | PassInputs | MaskedSources, table: StackedTable,
    sup: Supernodes | None = None,
    return_supernode_attention: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One :class:`GATLayer` over B stacked graphs on their neighbour table.

    Args:
        layer: the layer (its parameters; the PyG ``conv`` is not called).
        h: (B·N, F_in) node features of the stacked graphs, or their sources.
        table: the stacked neighbour table.
        sup: supernodes of some of the graphs, joined to all N patches of their graph.
        return_supernode_attention: also return the supernodes' attention over their patches.

    Returns:
        (B·N, H·F) patch outputs, (S, H·F) supernode outputs or ``None``, and when asked
        (S, N, H) supernode attention weights (after attention dropout in training).
    """
    heads, fo = layer.heads, layer.out_dim
    b, n = table.batches, table.nodes
    p_attn, slope, training = layer.conv.dropout, layer.conv.negative_slope, layer.training
    p_feat = layer.feat_drop.p

    proj, res, a = _project(layer, h, p_feat, training)  # (B·N, H·F), …, (B·N, 2, H)
    xp = proj.view(b * n, heads, fo)  # (B·N, H, F)
    xh = xp.permute(1, 0, 2).contiguous()  # (H, B·N, F) head-major for the sparse products
    a_src, a_dst = a[:, 0], a[:, 1]  # (B·N, H)
    logits = F.leaky_relu(a_src[table.index] + a_dst[:, None], slope)  # (B·N, K, H)

    if sup is None:
        alpha = _softmax_slots(logits, table.valid, p_attn, training,
                               table.isolated)  # (B·N, K, H)
        out = neighbour_sum(alpha, xh, table)  # (H, B·N, F)
        out = out.permute(1, 0, 2).reshape(b * n, heads * fo)  # (B·N, H·F)
        return _finish(layer, out, res), None, None

    s_rows = len(sup.graphs)
    g0, g1 = sup.graphs[0], sup.graphs[-1] + 1
    if tuple(sup.graphs) != tuple(range(g0, g1)):
        raise ValueError(f"supernode graphs must be consecutive, got {sup.graphs}")
    s_proj, s_res, s_a = _project(layer, sup.h, p_feat, training)  # (S, H·F), …, (S, 2, H)
    sp = s_proj.view(s_rows, heads, fo)  # (S, H, F)
    s_src, s_dst = s_a[:, 0], s_a[:, 1]  # (S, H)
    graphs = torch.arange(g0, g1, device=proj.device)  # (S,)

    # the extra slot of every patch: its graph's supernode, or −∞ where the graph has none
    has = torch.zeros(b, dtype=torch.bool, device=proj.device)
    has[graphs] = True
    slot_src = proj.new_zeros(b, heads, dtype=s_src.dtype).index_copy(0, graphs, s_src)  # (B, H)
    e_sup = F.leaky_relu(slot_src[:, None] + a_dst.view(b, n, heads), slope)  # (B, N, H)
    valid = torch.cat([table.valid, has.repeat_interleave(n)[:, None]], dim=1)  # (B·N, K+1)
    alpha = _softmax_slots(torch.cat([logits, e_sup.view(b * n, 1, heads)], dim=1), valid,
                           p_attn, training, table.isolated)  # (B·N, K+1, H)
    out = neighbour_sum(alpha[:, :-1], xh, table).permute(1, 0, 2)  # (B·N, H, F)
    sp_full = xp.new_zeros(b, heads, fo).index_copy(0, graphs, sp)  # (B, H, F)
    a_last = alpha[:, -1].to(xp.dtype).view(b, n, heads, 1)
    out = out.view(b, n, heads, fo) + a_last * sp_full[:, None]  # (B, N, H, F)
    out = _finish(layer, out.reshape(b * n, heads * fo), res)  # (B·N, H·F)

    # the supernodes' own rows: attention over all N patches of their graph
    e_own = F.leaky_relu(a_src.view(b, n, heads)[g0:g1] + s_dst[:, None], slope)  # (S, N, H)
    a_own = _softmax_slots(e_own, None, p_attn, training)  # (S, N, H)
    # per graph, (H, 1, N) @ (H, N, F) on views of the head-major rows the aggregation keeps
    s_out = torch.stack([
        torch.bmm(a_own[i].to(xh.dtype).t()[:, None], xh[:, g * n:(g + 1) * n])[:, 0]
        for i, g in enumerate(range(g0, g1))])  # (S, H, F)
    s_out = _finish(layer, s_out.reshape(s_rows, heads * fo), s_res)  # (S, H·F)
    return out, s_out, (a_own if return_supernode_attention else None)


def _aggregate_output(layer: GATLayer, h: Tensor, table: StackedTable) -> Tensor:
    """Attention-weighted input rows of a single-head layer without residual: (M, F_in)."""
    if layer.heads != 1 or layer.res is not None:
        raise ValueError("the output-layer path needs a single-head layer without residual")
    w = layer.conv.lin.weight  # (F_out, F_in)
    hd = _dropout(h, layer.feat_drop.p, layer.training)  # (M, F_in)
    att = torch.stack([layer.conv.att_src.view(-1), layer.conv.att_dst.view(-1)], 1)  # (F_out, 2)
    a = hd @ (w.t() @ att)  # (M, 2): source and destination logit parts
    logits = F.leaky_relu(a[:, 0][table.index] + a[:, 1:2], layer.conv.negative_slope)
    alpha = _softmax_slots(logits[:, :, None], table.valid, layer.conv.dropout, layer.training,
                           table.isolated)  # (M, K, 1)
    return neighbour_sum(alpha, hd[None], table)[0]  # (M, F_in)


def gat_output_layer(layer: GATLayer, h: Tensor, table: StackedTable,
                     rows: Tensor | None = None) -> Tensor:
    """A single-head :class:`GATLayer` without residual: aggregate first, project after.

    Args:
        layer: one head, ``res`` None (SRMIL's decoder output layer, 256 → D).
        h: (M, F_in) node features.
        table: the neighbour table.
        rows: (R,) rows whose outputs are needed (``None``: all).

    Returns:
        (R, F_out) outputs, norm and activation applied when the layer has them.
    """
    agg = _aggregate_output(layer, h, table)  # (M, F_in)
    if rows is not None:
        agg = agg.index_select(0, rows)  # (R, F_in)
    return _finish(layer, agg @ layer.conv.lin.weight.t(), None)  # (R, F_out)


def gat_output_cosine(layer: GATLayer, h: Tensor, table: StackedTable, rows: Tensor,
                      target: Tensor) -> Tensor:
    r"""Cosine between the outputs of :func:`gat_output_layer` at ``rows`` and ``target``,
    without forming the (R, F_out) outputs.

    With :math:`\hat x_i = W g_i + b` (:math:`g_i` the aggregated input row) and
    :math:`t_i = x_i / \lVert x_i\rVert`:

    .. math::
        \hat x_i \cdot t_i = g_i \cdot (W^\top t_i) + b \cdot t_i, \qquad
        \lVert \hat x_i \rVert^2 = g_i^\top (W^\top W) g_i + 2\, g_i \cdot W^\top b
        + \lVert b\rVert^2,

    so only F_in-wide rows are kept for backward (SRMIL's decoder: 256 instead of D), and
    F.normalize's conventions hold (norms clamped at 1e-12, a zero row has cosine 0).

    Args:
        layer: single head, no residual, no norm or activation.
        h: (M, F_in) node features.
        table: the neighbour table.
        rows: (R,) rows to reconstruct.
        target: (R, F_out) what they should point like.

    Returns:
        (R,) cosines.
    """
    if layer.norm is not None or layer.act is not None:
        raise ValueError("gat_output_cosine needs a layer without norm and activation")
    g = _aggregate_output(layer, h, table).index_select(0, rows)  # (R, F_in)
    w, b = layer.conv.lin.weight, layer.bias  # (F_out, F_in), (F_out,)
    t = F.normalize(target.to(g.dtype), dim=-1)  # (R, F_out)
    dot = (g * (t @ w)).sum(-1) + t @ b  # (R,)
    sq = ((g @ (w.t() @ w)) * g).sum(-1) + 2 * (g @ (w.t() @ b)) + b @ b  # (R,)
    return dot / sq.clamp_min(0.0).sqrt().clamp_min(1e-12)
