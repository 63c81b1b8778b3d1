"""Network layers shared by model families: locally connected 2D layers and minibatch
discrimination.

References:
    de Oliveira, Paganini, Nachman, "Learning Particle Physics by Example: Location-Aware
    Generative Adversarial Networks for Physics Synthesis", arXiv:1701.05927 (LAGAN).

    Salimans et al., "Improved Techniques for Training GANs", arXiv:1606.03498
    (minibatch discrimination).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LocallyConnected2d", "MinibatchDiscrimination", "minibatch_features", "batch_norm_2d"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class LocallyConnected2d(nn.Module):
    """A 2D convolution whose weights are not shared: every output position has its own
    filter (Keras ``LocallyConnected2D``), for images where location matters. With
    ``shared=True`` it is an ordinary convolution computed the same way.

    Computed without a loop over pixels: the input is viewed "batch-last"
    ``(H * W, C, B)``, the ``kh * kw`` windows of every output position are gathered with
    one ``index_select`` into ``(positions, kh * kw * C, B)`` (whose backward is a single
    ``index_add``) and one batched matrix product applies every position's filter. The
    output is a ``(B, C_out, H_out, W_out)`` view of a batch-last tensor, so a chain of
    these layers (and element-wise functions between them) never transposes; a standard
    contiguous input costs one transpose. Kernel index order: (row offset, column
    offset, channel).

    Args:
        in_channels, out_channels: channel counts.
        input_size: ``(H, W)`` of the input, needed because weights depend on position.
        kernel_size, stride, padding: as for :class:`torch.nn.Conv2d` (zero padding);
            ``padding`` may be ``(top, bottom, left, right)``.
        bias: add a bias (per output position and channel, or per channel if shared).
        shared: one filter for all positions (a convolution).
        init: ``"he_uniform"`` or ``"glorot_normal"`` for the kernel.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H_out, W_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: tuple[int, int],
                 kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, ...] = 0, bias: bool = True,
                 shared: bool = False, init: str = "he_uniform"):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size = _pair(input_size)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        if isinstance(padding, int):
            padding = (padding,) * 4
        elif len(padding) == 2:
            padding = (padding[0], padding[0], padding[1], padding[1])
        self.padding = tuple(int(p) for p in padding)
        (h, w), (kh, kw), (sh, sw) = self.input_size, self.kernel_size, self.stride
        pt, pb, pl, pr = self.padding
        self.output_size = ((h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1)
        if min(self.output_size) < 1:
            raise ValueError(f"input {self.input_size} too small for kernel {self.kernel_size}")
        self.shared = shared
        n_positions = self.output_size[0] * self.output_size[1]
        fan_in = in_channels * kh * kw
        w_shape = (out_channels, fan_in) if shared else (n_positions, out_channels, fan_in)
        b_shape = (out_channels, 1) if shared else (n_positions, out_channels, 1)
        self.weight = nn.Parameter(torch.empty(w_shape))
        self.bias = nn.Parameter(torch.zeros(b_shape)) if bias else None
        with torch.no_grad():
            if init == "he_uniform":
                limit = math.sqrt(6.0 / fan_in)
                self.weight.uniform_(-limit, limit)
            elif init == "glorot_normal":
                self.weight.normal_(0.0, math.sqrt(2.0 / (fan_in + out_channels)))
            else:
                raise ValueError(f"unknown init {init!r}")
        # input cell read by (output position, kernel offset); h * w is a zero row (padding)
        oh, ow = self.output_size
        rows = (torch.arange(oh) * sh - pt).reshape(oh, 1, 1, 1) + torch.arange(kh).reshape(
            1, 1, kh, 1)
        cols = (torch.arange(ow) * sw - pl).reshape(1, ow, 1, 1) + torch.arange(kw).reshape(
            1, 1, 1, kw)
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        index = torch.where(inside, rows * w + cols, torch.tensor(h * w)).reshape(-1)
        self.needs_zero_row = bool((~inside).any())
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        xb = x.permute(2, 3, 1, 0)  # (H, W, C, B); free if x is a view of batch-last data
        if not xb.is_contiguous():
            xb = xb.contiguous()
        xb = xb.reshape(h * w, c, b)
        if self.needs_zero_row:
            xb = torch.cat([xb, xb.new_zeros(1, c, b)])
        oh, ow = self.output_size
        patches = xb.index_select(0, self.index).reshape(oh * ow, -1, b)  # (L, kh*kw*C, B)
        if self.shared:
            out = torch.matmul(self.weight, patches)
            if self.bias is not None:
                out = out + self.bias
        elif self.bias is not None:
            out = torch.baddbmm(self.bias, self.weight, patches)
        else:
            out = torch.bmm(self.weight, patches)
        return out.reshape(oh, ow, self.out_channels, b).permute(3, 2, 0, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, shared={self.shared}")


def batch_norm_2d(norm: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """Apply a :class:`~torch.nn.BatchNorm2d` to a ``(B, C, H, W)`` view of batch-last
    data without transposing it (BN sees it as ``(H*W, C, B, 1)``: same statistics)."""
    b, c, h, w = x.shape
    xb = x.permute(2, 3, 1, 0)
    if not xb.is_contiguous():
        return norm(x)
    if not norm.training and norm.track_running_stats:
        # inference: an affine map per channel (the library kernel is slow on this layout)
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.affine:
            scale = scale * norm.weight
            shift = norm.bias - norm.running_mean * scale
        else:
            shift = -norm.running_mean * scale
        return torch.addcmul(shift.unsqueeze(1), xb, scale.unsqueeze(1)).permute(3, 2, 0, 1)
    y = norm(xb.reshape(h * w, c, b, 1))
    return y.reshape(h, w, c, b).permute(3, 2, 0, 1)


def minibatch_features(m: Tensor) -> Tensor:
    """``(B, kernels, dim) -> (B, kernels)``: ``sum_j exp(-|m_i - m_j|_1)`` per kernel."""
    mk = m.transpose(0, 1).contiguous()  # (kernels, B, dim)
    dist = torch.cdist(mk, mk, p=1)  # (kernels, B, B)
    return torch.exp(-dist).sum(dim=2).transpose(0, 1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016) as in the CaloGAN: project features
    to ``n_kernels x kernel_dim``, compare every sample with the whole batch by L1
    distance, return ``tanh(sum_j exp(-distance))`` per kernel, so the discriminator sees
    how alike the showers of a batch are (which exposes mode collapse).

    Shape:
        ``(B, in_features) -> (B, n_kernels)``.
    """

    def __init__(self, in_features: int, n_kernels: int = 10, kernel_dim: int = 10):
        super().__init__()
        self.n_kernels, self.kernel_dim = n_kernels, kernel_dim
        self.proj = nn.Linear(in_features, n_kernels * kernel_dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        m = self.proj(x).reshape(-1, self.n_kernels, self.kernel_dim)
        return torch.tanh(minibatch_features(m))
