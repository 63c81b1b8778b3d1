"""Masked autoregressive flows with rational-quadratic splines, small and exportable.

The pieces CaloFlow is built from (:mod:`caloforge.models.caloflow`):

- :func:`rqs_knots`, :func:`rqs_forward`, :func:`rqs_inverse`: a monotonic
  rational-quadratic spline on ``[-bound, bound]`` with identity tails. The maths (soft
  clamping of the unconstrained parameters, knot construction, the quadratic-root inverse)
  is zuko's ``MonotonicRQSTransform`` (zuko 1.6, ``zuko/transforms.py``), rewritten as plain
  functions that return the spline parameters too (the student's distillation loss compares
  them) and that export to ONNX: the bin search is a count of comparisons,
  ``(x[..., None] >= knots).sum(-1) - 1``, not ``torch.searchsorted``.
- :class:`MADE`: a masked MLP (Germain et al.) whose hidden units carry degrees ``0..D-1``;
  the context reaches every hidden unit, so even the first feature's spline depends on it
  (a degree-0 unit sees only the context). Masked weights are kept exactly zero (masked at
  construction and again after every optimiser step, :meth:`MADE.apply_masks`), so the
  forward pass is a plain ``linear``: no mask product per call, which matters for the
  teacher's thousands of sequential passes.
- :class:`MAFBlock` (density direction in one pass, sampling in ``D`` passes) and
  :class:`IAFBlock` (sampling in one pass) with the same parametrisation, so a student IAF
  block can be matched to a teacher MAF block parameter by parameter.

References:
    Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", arXiv:1906.04032.

    Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution
    Estimation", arXiv:1502.03509.

    Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation",
    arXiv:1705.07057.

    Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow",
    arXiv:1606.04934.

    Rozet et al., zuko (github.com/probabilists/zuko), ``MonotonicRQSTransform``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rqs_knots", "rqs_forward", "rqs_inverse", "MADE", "MAFBlock", "IAFBlock",
           "MAF", "IAF", "standard_normal_log_prob"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, 1)`` summed over the last dimension: ``(B, D) -> (B,)``."""
    return -0.5 * (z * z).sum(-1) - z.shape[-1] * _HALF_LOG_2PI


def rqs_knots(params: Tensor, bins: int, bound: float, slope: float = 1e-3
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Spline knots from unconstrained parameters (zuko's parametrisation).

    Args:
        params: ``(..., 3 * bins - 1)``: bin widths, bin heights, interior derivatives.
        bins: number of bins ``K``.
        bound: the spline maps ``[-bound, bound]`` onto itself; identity outside.
        slope: minimum slope.

    Returns:
        ``(xk, yk, dk)``, each ``(..., K + 1)``: knot positions, values and derivatives
        (derivative 1 at both ends, matching the identity tails).
    """
    w, h, d = params[..., :bins], params[..., bins:2 * bins], params[..., 2 * bins:]
    ls = math.log(slope)
    w = w / (1 + torch.abs(2 * w / ls))
    h = h / (1 + torch.abs(2 * h / ls))
    d = d / (1 + torch.abs(d / ls))
    w = F.pad(torch.softmax(w, dim=-1), (1, 0), value=0.0)
    h = F.pad(torch.softmax(h, dim=-1), (1, 0), value=0.0)
    xk = bound * (2 * torch.cumsum(w, dim=-1) - 1)
    yk = bound * (2 * torch.cumsum(h, dim=-1) - 1)
    dk = torch.exp(F.pad(d, (1, 1), value=0.0))
    return xk, yk, dk


def _bin(knots: Tensor, v: Tensor, xk: Tensor, yk: Tensor, dk: Tensor):
    """Bin index of ``v`` in ``knots`` by counting comparisons (exports to ONNX), and the
    bin's end points, derivatives and slope; ``inside`` is False in the identity tails."""
    bins = knots.shape[-1] - 1
    k = (v.unsqueeze(-1) >= knots).sum(-1) - 1
    inside = (k >= 0) & (k < bins)
    k = k.clamp(0, bins - 1).unsqueeze(-1)
    x0, x1 = xk.gather(-1, k).squeeze(-1), xk.gather(-1, k + 1).squeeze(-1)
    y0, y1 = yk.gather(-1, k).squeeze(-1), yk.gather(-1, k + 1).squeeze(-1)
    d0, d1 = dk.gather(-1, k).squeeze(-1), dk.gather(-1, k + 1).squeeze(-1)
    return inside, x0, x1, y0, y1, d0, d1, (y1 - y0) / (x1 - x0)


def rqs_forward(x: Tensor, knots: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``y = S(x)`` and ``log |dy/dx|`` elementwise; ``x`` ``(...)``, knots ``(..., K+1)``."""
    xk, yk, dk = knots
    inside, x0, x1, y0, y1, d0, d1, s = _bin(xk, x, xk, yk, dk)
    t = torch.where(inside, (x - x0) / (x1 - x0), torch.zeros_like(x))
    tt = t * (1 - t)
    denom = s + (d0 + d1 - 2 * s) * tt
    y = y0 + (y1 - y0) * (s * t * t + d0 * tt) / denom
    jac = s * s * (2 * s * tt + d0 * (1 - t) ** 2 + d1 * t * t) / (denom * denom)
    return torch.where(inside, y, x), torch.where(inside, torch.log(jac), torch.zeros_like(x))


def rqs_inverse(y: Tensor, knots: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``x = S^{-1}(y)`` elementwise (the root of a quadratic, as in zuko)."""
    xk, yk, dk = knots
    inside, x0, x1, y0, y1, d0, d1, s = _bin(yk, y, xk, yk, dk)
    yr = torch.where(inside, y - y0, torch.zeros_like(y))
    a = (y1 - y0) * (s - d0) + yr * (d0 + d1 - 2 * s)
    b = (y1 - y0) * d0 - yr * (d0 + d1 - 2 * s)
    c = -s * yr
    disc = torch.clamp(b * b - 4 * a * c, min=0.0)
    t = 2 * c / (-b - torch.sqrt(disc))
    return torch.where(inside, x0 + t * (x1 - x0), y)


class MADE(nn.Module):
    """Masked MLP: ``(x (B, D), context (B, C)) -> (B, D, P)`` where output ``[:, i]``
    depends only on the context and on the features before ``i`` in ``order``.

    Args:
        features: ``D``.
        context: ``C`` (may be 0).
        hidden: units per hidden layer.
        layers: number of hidden layers (at least 1).
        params_per_feature: ``P``.
        order: ``(D,)`` a permutation of ``0..D-1``; feature ``order[j]`` comes ``j``-th.
    """

    def __init__(self, features: int, context: int, hidden: int, layers: int,
                 params_per_feature: int, order: Tensor):
        super().__init__()
        self.features, self.params_per_feature = features, params_per_feature
        rank = torch.empty(features, dtype=torch.long)
        rank[order] = torch.arange(features)  # position of each feature in the order
        in_deg = rank + 1  # 1..D
        hid_deg = (torch.arange(hidden) * features) // hidden  # 0..D-1, spread evenly
        out_deg = in_deg.repeat_interleave(params_per_feature)
        sizes = [features + context] + [hidden] * layers + [features * params_per_feature]
        self.linears = nn.ModuleList(nn.Linear(a, b)
                                     for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        masks = [torch.cat([(hid_deg[:, None] >= in_deg[None, :]),
                            torch.ones(hidden, context, dtype=torch.bool)], dim=1)]
        masks += [hid_deg[:, None] >= hid_deg[None, :] for _ in range(layers - 1)]
        masks.append(out_deg[:, None] > hid_deg[None, :])
        for i, mask in enumerate(masks):
            self.register_buffer(f"mask{i}", mask.float(), persistent=False)
        last = self.linears[-1]
        nn.init.normal_(last.weight, std=1e-3 / math.sqrt(hidden))  # start near identity
        nn.init.zeros_(last.bias)
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the masked weights (after construction and every optimiser step)."""
        for i, lin in enumerate(self.linears):
            lin.weight.mul_(getattr(self, f"mask{i}"))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        h = torch.cat([x, context], dim=-1)
        for lin in self.linears[:-1]:
            h = F.relu(lin(h))
        return self.linears[-1](h).reshape(x.shape[0], self.features, self.params_per_feature)


class _SplineBlock(nn.Module):
    def __init__(self, features: int, context: int, hidden: int, layers: int, bins: int,
                 bound: float, order: Tensor):
        super().__init__()
        self.bins, self.bound = bins, bound
        self.made = MADE(features, context, hidden, layers, 3 * bins - 1, order)

    def knots(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return rqs_knots(params, self.bins, self.bound)


class MAFBlock(_SplineBlock):
    """One MAF step, density direction ``x -> z``: ``z_i = S(x_i; p_i(x_<i, c))``."""

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, log|det dz/dx| (B,), params (B, D, P))`` in one pass."""
        params = self.made(x, context)
        z, ladj = rqs_forward(x, self.knots(params))
        return z, ladj.sum(-1), params

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        """``x`` from ``z``: ``D`` sequential passes (a fixed loop; slow by design)."""
        x = torch.zeros_like(z)
        for _ in range(z.shape[-1]):
            x = rqs_inverse(z, self.knots(self.made(x, context)))
        return x


class IAFBlock(_SplineBlock):
    """One IAF step, sampling direction ``z -> x``: ``x_i = S^{-1}(z_i; p_i(z_<i, c))``;
    the same bijection family as :class:`MAFBlock`, sampled in one pass."""

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, params (B, D, P))`` in one pass."""
        params = self.made(z, context)
        return rqs_inverse(z, self.knots(params)), params


def _orders(features: int, blocks: int) -> list[Tensor]:
    """Feature order per block: natural, reversed, natural... (zuko's default)."""
    base = torch.arange(features)
    return [base if i % 2 == 0 else base.flip(0) for i in range(blocks)]


class MAF(nn.Module):
    """A stack of :class:`MAFBlock` (data ``x`` -> latent ``z``), standard normal base.

    Args:
        features, context, hidden, layers, bins, bound: see :class:`MADE`, :func:`rqs_knots`.
        blocks: number of MADE blocks; block orders alternate natural/reversed.
    """

    def __init__(self, features: int, context: int, hidden: int, layers: int, bins: int,
                 bound: float, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            MAFBlock(features, context, hidden, layers, bins, bound, order)
            for order in _orders(features, blocks))

    def trace(self, x: Tensor, context: Tensor
              ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """``(z, log|det| (B,), intermediates [u_1..u_{K-1}], params [p_0..p_{K-1}])``."""
        ladj = x.new_zeros(x.shape[0])
        inter, params = [], []
        for block in self.blocks:
            x, l, p = block(x, context)
            ladj = ladj + l
            inter.append(x)
            params.append(p)
        return x, ladj, inter[:-1], params

    def log_prob(self, x: Tensor, context: Tensor) -> Tensor:
        """``log p(x | c)`` per row, ``(B,)``."""
        z, ladj, _, _ = self.trace(x, context)
        return standard_normal_log_prob(z) + ladj

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.log_prob(x, context)

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        """Samples ``x`` from base noise ``z``: ``features`` passes per block."""
        for block in reversed(self.blocks):
            z = block.inverse(z, context)
        return z

    def apply_masks(self) -> None:
        for block in self.blocks:
            block.made.apply_masks()


class IAF(nn.Module):
    """The student: :class:`IAFBlock` ``k`` mirrors :class:`MAF` block ``k`` (same order),
    so ``x = student(z)`` in one pass per block.

    Args: as :class:`MAF`.
    """

    def __init__(self, features: int, context: int, hidden: int, layers: int, bins: int,
                 bound: float, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            IAFBlock(features, context, hidden, layers, bins, bound, order)
            for order in _orders(features, blocks))

    def trace(self, z: Tensor, context: Tensor
              ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """``(x, intermediates [u_1..u_{K-1}], params [p_0..p_{K-1}])`` in the teacher's
        block numbering (``u_k`` is the input of block ``k``)."""
        inter, params = [], []
        for block in reversed(self.blocks):
            z, p = block(z, context)
            inter.append(z)
            params.append(p)
        return z, inter[:-1][::-1], params[::-1]

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        return self.trace(z, context)

    def sample(self, z: Tensor, context: Tensor) -> Tensor:
        x = z
        for block in reversed(self.blocks):
            x, _ = block(x, context)
        return x

    def apply_masks(self) -> None:
        for block in self.blocks:
            block.made.apply_masks()
