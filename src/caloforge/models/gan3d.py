"""3DGAN: a 3D-convolutional conditional GAN for high-granularity calorimeters.

The calorimeter is one 3D image ``(rows, cols, layers)`` (x, y transverse, z the depth;
51 x 51 x 25 for ``clic51``). Written anew in PyTorch after section 2 of Carminati et
al. (CHEP 2019):

- Generator: a latent vector (256) multiplied by the primary energy (``E / 100 GeV``,
  the Hadamard product of the paper) and concatenated with the scaled angle; a dense layer
  to a coarse 3D grid, then four 3D convolutions: ``gen_channels[0]`` filters (paper 64,
  6x6x8 kernels), upsampling, ``gen_channels[1]`` (6, 5x8x8), upsampling,
  ``gen_channels[2]`` (6, 3x5x8) and a single 2x2x2 filter; leaky ReLU after the first
  three, batch norm after the first two, ReLU output.
- Discriminator: four 3D convolutions (16 filters of 5x6x6), leaky ReLU in each, batch
  norm after the activation in all but the first, average pooling, then three heads on
  the flattened features: real/fake (a sigmoid neuron, kept as a logit), a linear primary
  energy regression and a linear incident angle regression.
- Loss (section 2.3): ``W_G L_G + W_P L_P + W_A L_A + W_E L_E + W_B L_B``: binary cross
  entropy (real/fake), mean absolute percentage error (MAPE, in percent as in Keras) of the
  primary energy regression, mean absolute error of the angle regression (radians), MAPE of
  the deposited energy (ECAL sum) against the expected deposit for the requested energy
  and angle (a fit to the training data, :meth:`Gan3D.prepare`), and MAPE of the binned
  pixel-intensity spectrum against the real batch's. ``loss_weights`` are given in the
  order of the paper's equation (G, P, A, E, B) = (3, 0.1, 25, 0.1, 0.1).
- Training (section 2.4): pixels as ``(E / GeV) ** 0.85`` (not normalised), RMSprop, label
  switching on the discriminator's targets (each label flipped with probability 0.05, as
  the 3DGAN code's ``BitFlip``), one discriminator update on a real batch and one on a
  generated batch, then two generator updates.

Differences from the paper, each a config setting (``Gan3DConfig``): the spectrum term
counts pixels with soft (sigmoid-edged) bins in log10(MeV) so that it has a gradient (a
hard count has none); the discriminator convolutions may be strided (``disc_strides``) and
the generator's coarse grid is the target grid divided by ``gen_upsample`` twice, so a
CPU-sized model (``configs/3dgan_clic51.yaml``) does not run wide filters on all 65025
cells; the networks may be restricted to a ``window`` centred on the grid (the first
3DGAN's 25 x 25 image); the second upsampling may be a sub-pixel convolution
(``gen_subpixel``, ICNR-initialised) or a resize-convolution with nearest or trilinear
interpolation (``gen_upsample_mode``); the image may be rescaled to a drawn ECAL sum
(``response_normalisation``), so that the energy scale holds by construction; generated
batches reuse the real batch's conditions in a random order.

Any geometry works: layers of different shapes are padded (bottom/right) to the largest
``(rows, cols)``, generated cells outside a layer's grid are masked to zero and cropped
away in :meth:`Gan3D.decode`.

References:
    Khattak, Vallecorsa, Carminati, "Three Dimensional Energy Parametrized Generative
    Adversarial Networks for Electromagnetic Shower Simulation", 2018 25th IEEE ICIP,
    pp. 3913-3917.

    Aitken et al., "Checkerboard artifact free sub-pixel convolution: A note on sub-pixel
    convolution, resize convolution and convolution resize", arXiv:1707.02937 (ICNR).

    Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill (2016).

    Carminati et al., "Generative Adversarial Networks for fast simulation", J. Phys.:
    Conf. Ser. 1525 (2020) 012064 (CHEP 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caloforge.config import check_choice
from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models import register_model
from caloforge.models._transforms import power_scale, power_unscale, scale_angle
from caloforge.models.base import Conditioning, GenerativeModel, ModelConfig
from caloforge.units import gev_to_mev, mev_to_gev

__all__ = [
    "Gan3DConfig",
    "Gan3D",
    "Gan3DGenerator",
    "Gan3DDiscriminator",
    "mape",
    "mae",
    "pixel_spectrum",
    "flip_labels",
    "to_units",
    "to_mev",
]

_CPU_CHUNK = 64  # showers per generator pass in CPU inference (65025-cell grids are large)

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Gan3DConfig(ModelConfig):
    """3DGAN settings; defaults follow Carminati et al. (CHEP 2019), sections 2.2-2.4.

    Attributes:
        latent_size: latent vector size (256).
        dense_channels: channels of the dense layer's coarse 3D grid (8).
        gen_channels: filters of the generator's first three convolutions (64, 6, 6); the
            fourth has one filter.
        gen_kernels: kernels of the four generator convolutions, (rows, cols, layers) =
            (x, y, z): (6,6,8), (5,8,8), (3,5,8), (2,2,2).
        gen_upsample: upsampling factor per axis of each of the two upsampling steps; the
            coarse grid is ``ceil(size / factor**2)``.
        gen_upsample_mode: how the grids are enlarged before a convolution: ``"nearest"``
            (cells repeated, as Keras ``UpSampling3D`` in the paper) or ``"trilinear"``
            (a resize-convolution: smooth interpolation, then the convolution).
        gen_subpixel: the second upsampling is learnt instead of resized: the third
            convolution runs on the middle grid with ``gen_channels[2] * prod(gen_upsample)``
            filters whose outputs are laid out as the sub-cells of the full grid (a
            sub-pixel convolution, i.e. a strided transposed convolution). Cheaper on a CPU
            than a convolution over all cells of the full grid, but each sub-cell has its
            own filters: randomly initialised, they print a periodic pattern with the
            upsampling's period over the whole grid (Odena et al.; Aitken et al.).
        gen_icnr: initialise the sub-pixel filters of every sub-cell alike (ICNR, Aitken
            et al.), so that the sub-pixel convolution starts as a resize-convolution with
            nearest-neighbour upsampling and no periodic pattern.
        gen_output: the generator's last activation: ``"relu"`` (the paper) or
            ``"softplus"`` (every cell positive, so that every cell receives the losses'
            gradients, where a ReLU's empty cells receive none; the readout threshold then
            decides which cells are hit).
        window: ``(rows, cols)`` of a window centred on the grid (the showers are centred
            on their barycentre) to which generator and discriminator are restricted; cells
            outside it are generated as zeros. ``(0, 0)``: the whole grid. The first 3DGAN
            (Khattak et al. 2018) used such a 25 x 25 window of the 51 x 51 grid.
        disc_channels: filters of the four discriminator convolutions (16 each).
        disc_kernels: their kernels (5,6,6 each).
        disc_strides: their strides (1 in the paper).
        disc_pool: average pooling after the last convolution (2 per axis; capped by the
            grid size).
        leaky_slope: leaky ReLU negative slope (Keras default 0.3).
        bn_momentum: batch-norm running-statistics momentum (PyTorch convention).
        gen_lr, disc_lr: RMSprop learning rates (Keras default 1e-3).
        rmsprop_alpha: RMSprop smoothing constant (Keras ``rho`` 0.9).
        generator_steps: generator updates per discriminator step (2).
        loss_weights: (W_G, W_P, W_A, W_E, W_B): real/fake, primary energy, angle,
            deposited energy, pixel spectrum; the paper's (3, 0.1, 25, 0.1, 0.1).
        label_flip_prob: probability that a discriminator target is switched (0.05).
        voxel_power, voxel_scale_mev: pixels as ``(E / scale) ** power`` (0.85, GeV).
        energy_scale_gev: the latent vector is multiplied by ``E / energy_scale_gev``; the
            energy head regresses ``E / energy_scale_gev`` (100).
        spectrum_edges_mev: lower edges of the pixel-intensity bins in MeV (the last bin is
            open); pixels below the first edge are not counted.
        spectrum_softness: width of the soft bin edges in decades of MeV.
        mape_floor: smallest denominator of the MAPE terms (a spectrum bin with fewer
            than this many pixels per shower counts as this many).
        spectrum_target: ``"batch"`` (the paper): the generated batch's mean spectrum
            against the real batch's; ``"shower"``: each generated shower's spectrum
            against that of the real shower whose primary energy and angle it was given,
            so that the pixel counts (the occupancy) follow the energy instead of only
            matching on average.
        response_normalisation: the generated image is rescaled so that its ECAL sum is a
            drawn response, ``E (c0 + c1 a + c2 a^2) (1 + s z)``: the deposited fraction
            fitted to the training showers (the ``L_E`` target) times one plus their
            relative spread ``s`` around it times a standard normal ``z`` that is one more
            latent component. The generator then learns the shower's shape only; the
            energy scale is exact by construction (as the per-layer normalisation of
            CaloFlow, Krause and Shih, arXiv:2106.05285, does for the layer energies).
            Not in the paper (default off); with it ``L_E`` only sees the drawn spread.
        disc_moments: the discriminator also sees each image's shower features
            (:func:`shower_moments`: ECAL sum, hit cells, the energy in the front, middle
            and back thirds of the depth, barycentre and RMS width along x, y and z),
            standardised with the training showers' mean and spread and passed through a
            small MLP whose output joins the convolutional features: it can then tell
            apart showers whose moments do not go together as the real ones' do (their
            correlations, the target of the paper's figure 3a). Not in the paper
            (default off).
        disc_batch_moments: the discriminator also sees statistics of the batch it is
            shown: the spread of each standardised shower feature and of the two
            conditions (primary energy, polar angle), and the correlation of every pair of
            them (the 13 features of the paper's figure 3a), through one linear layer,
            beside every shower's own features. Real and generated batches are shown
            apart, so a generated batch whose features spread or go together otherwise
            than the real ones' is told apart: the minibatch standard deviation of Karras
            et al. (arXiv:1710.10196), with the correlations added, a form of minibatch
            discrimination (Salimans et al., arXiv:1606.03498). It acts in training only.
            Not in the paper (default off).
        mirror_y: the calorimeter is symmetric under y -> -y (the polar angle tilts the
            showers along x): each generated shower is mirrored in y when one more latent
            component, which the generator network does not see (so it cannot undo the
            mirroring), is positive. The generated ensemble is then symmetric in y, its
            mean barycentre on the axis, whatever offset the network learns. Not in the
            paper (default off).
    """

    latent_size: int = 256
    dense_channels: int = 8
    gen_channels: Triple = (64, 6, 6)
    gen_kernels: tuple[Triple, ...] = ((6, 6, 8), (5, 8, 8), (3, 5, 8), (2, 2, 2))
    gen_upsample: Triple = (3, 3, 2)
    gen_upsample_mode: str = "nearest"
    gen_subpixel: bool = False
    gen_icnr: bool = True
    gen_output: str = "relu"
    window: tuple[int, int] = (0, 0)
    disc_channels: tuple[int, int, int, int] = (16, 16, 16, 16)
    disc_kernels: tuple[Triple, ...] = ((5, 6, 6),) * 4
    disc_strides: tuple[int, int, int, int] = (1, 1, 1, 1)
    disc_pool: int = 2
    leaky_slope: float = 0.3
    bn_momentum: float = 0.1
    gen_lr: float = 1e-3
    disc_lr: float = 1e-3
    rmsprop_alpha: float = 0.9
    generator_steps: int = 2
    loss_weights: tuple[float, float, float, float, float] = (3.0, 0.1, 25.0, 0.1, 0.1)
    label_flip_prob: float = 0.05
    voxel_power: float = 0.85
    voxel_scale_mev: float = 1000.0
    energy_scale_gev: float = 100.0
    spectrum_edges_mev: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    spectrum_softness: float = 0.05
    mape_floor: float = 1.0
    spectrum_target: str = "batch"
    response_normalisation: bool = False
    disc_moments: bool = False
    disc_batch_moments: bool = False
    mirror_y: bool = False

    def __post_init__(self) -> None:
        if len(self.gen_kernels) != 4 or len(self.disc_kernels) != 4:
            raise CaloforgeError("3dgan gen_kernels and disc_kernels need four [x, y, z] "
                                 "kernels each (four convolution layers)")
        for k in (*self.gen_kernels, *self.disc_kernels):
            if len(k) != 3 or min(k) < 1:
                raise CaloforgeError(f"3dgan kernels must be three positive sizes, got {k}")
        for name in ("latent_size", "dense_channels", "generator_steps", "disc_pool"):
            if getattr(self, name) < 1:
                raise CaloforgeError(f"3dgan {name} must be at least 1")
        if min(self.gen_channels) < 1 or min(self.disc_channels) < 1:
            raise CaloforgeError("3dgan channel counts must be at least 1")
        if len(self.window) != 2 or min(self.window) < 0:
            raise CaloforgeError("3dgan window must be [rows, cols] >= 0 ([0, 0]: no window)")
        check_choice("3dgan", "gen_upsample_mode", self.gen_upsample_mode,
                     ("nearest", "trilinear"))
        if min(self.gen_upsample) < 1 or min(self.disc_strides) < 1:
            raise CaloforgeError("3dgan gen_upsample and disc_strides must be at least 1")
        if self.voxel_power <= 0 or self.voxel_scale_mev <= 0:
            raise CaloforgeError("3dgan voxel_power and voxel_scale_mev must be positive")
        if not 0.0 <= self.label_flip_prob < 0.5:
            raise CaloforgeError("3dgan label_flip_prob must be in [0, 0.5)")
        edges = self.spectrum_edges_mev
        if not edges or min(edges) <= 0 or any(np.diff(edges) <= 0):
            raise CaloforgeError("3dgan spectrum_edges_mev must be positive and increasing")
        if self.spectrum_softness <= 0 or self.mape_floor <= 0:
            raise CaloforgeError("3dgan spectrum_softness and mape_floor must be positive")
        check_choice("3dgan", "gen_output", self.gen_output, ("relu", "softplus"))
        check_choice("3dgan", "spectrum_target", self.spectrum_target, ("batch", "shower"))


# ---- preprocessing and loss terms ------------------------------------------------------


def to_units(mev: Tensor, power: float = 0.85, scale_mev: float = 1000.0) -> Tensor:
    """Deposits in MeV -> network pixels ``(E / scale) ** power`` (negatives -> 0)."""
    return power_scale(mev, power, scale_mev)


def to_mev(units: Tensor, power: float = 0.85, scale_mev: float = 1000.0) -> Tensor:
    """Inverse of :func:`to_units`: network pixels (>= 0) -> MeV."""
    return power_unscale(units.clamp_min(0), power, scale_mev)


def mape(pred: Tensor, target: Tensor, floor: float = 1e-7) -> Tensor:
    """Mean absolute percentage error in percent (Keras convention):
    ``100 * mean(|pred - target| / max(|target|, floor))``."""
    return 100.0 * ((pred - target).abs() / target.abs().clamp_min(floor)).mean()


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error (the angle term, in the targets' unit: radians)."""
    return (pred - target).abs().mean()


def pixel_spectrum(mev: Tensor, edges_mev: tuple[float, ...] | Tensor,
                   softness: float = 0.05) -> Tensor:
    """Soft count of pixels per intensity bin, per shower.

    A pixel of energy ``E`` counts ``sigmoid((t - lo) / s) - sigmoid((t - hi) / s)`` in the
    bin ``[lo, hi)``, with ``t = log10(E / MeV)``, ``lo``, ``hi`` the log10 edges and ``s``
    the softness in decades; a hard count as ``s -> 0``, with a gradient for ``s > 0``.

    Args:
        mev: ``(B, ...)`` deposits in MeV (any trailing shape).
        edges_mev: increasing lower bin edges in MeV; the last bin is open.
        softness: edge width in decades.

    Returns:
        ``(B, len(edges))`` pixel counts.
    """
    t = torch.log10(mev.flatten(1).clamp_min(1e-12))
    edges = torch.as_tensor(edges_mev, dtype=t.dtype, device=t.device).log10()
    above = [torch.sigmoid((t - edges[i]) / softness) for i in range(edges.shape[0])]
    counts = []
    for i in range(edges.shape[0]):
        member = above[i] - above[i + 1] if i + 1 < edges.shape[0] else above[i]
        counts.append(member.sum(dim=1))
    return torch.stack(counts, dim=1)


def flip_labels(labels: Tensor, prob: float, generator: torch.Generator | None = None) -> Tensor:
    """Label switching: each 0/1 target flipped with probability ``prob`` (3DGAN ``BitFlip``)."""
    if prob <= 0:
        return labels
    flip = torch.rand(labels.shape, generator=generator, device=labels.device) < prob
    return torch.where(flip, 1.0 - labels, labels)


# ---- networks -----------------------------------------------------------------------------


def _same_pad(kernel: Triple) -> tuple[int, ...]:
    """``F.pad`` widths (last axis first) giving a 'same' stride-1 output, Keras-style
    (an even kernel pads one more cell at the end)."""
    pads: list[int] = []
    for k in reversed(kernel):
        pads += [(k - 1) // 2, k // 2]
    return tuple(pads)


class _Conv3d(nn.Module):
    """A 3D convolution with Keras 'same' padding and an optional stride."""

    def __init__(self, c_in: int, c_out: int, kernel: Triple, stride: int = 1,
                 bias: bool = True):
        super().__init__()
        self.pad = _same_pad(kernel)
        self.conv = nn.Conv3d(c_in, c_out, tuple(kernel), stride=stride, bias=bias)
        # a 1x1x1 kernel to one channel is a weighted channel sum; as such it runs several
        # times faster on a CPU than the general convolution over a full-resolution grid
        self.pointwise = tuple(kernel) == (1, 1, 1) and stride == 1 and c_out == 1

    def forward(self, x: Tensor) -> Tensor:
        if self.pointwise:
            out = (x * self.conv.weight.reshape(1, -1, 1, 1, 1)).sum(dim=1, keepdim=True)
            return out if self.conv.bias is None else out + self.conv.bias.reshape(1, 1, 1, 1, 1)
        return self.conv(F.pad(x, self.pad))


def _icnr_(conv: nn.Conv3d, n_sub: int) -> None:
    """ICNR initialisation (Aitken et al., arXiv:1707.02937) of a sub-pixel convolution
    whose output channel ``ch * n_sub + sub`` is sub-cell ``sub`` of channel ``ch``: one
    kernel per channel, copied to all its sub-cells."""
    with torch.no_grad():
        base = conv.weight[::n_sub].clone()
        conv.weight.copy_(base.repeat_interleave(n_sub, dim=0))
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[::n_sub].repeat_interleave(n_sub))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Gan3DGenerator(nn.Module):
    """Latent vectors and conditions -> pixel grids ``(B, 1, rows, cols, layers)`` in
    network units (``(E / scale) ** power``, >= 0), zero outside every layer's cells.

    Args:
        grid: the full grid ``(rows, cols, layers)``.
        mask: ``(rows, cols, layers)`` 1 on real cells, 0 on padding.
        has_angle: whether a scaled angle is concatenated to the latent vector.
        cfg: the 3DGAN config.
    """

    def __init__(self, grid: Triple, mask: Tensor, has_angle: bool, cfg: Gan3DConfig):
        super().__init__()
        self.cfg = cfg
        self.has_angle = has_angle
        up = cfg.gen_upsample
        self.grid = tuple(int(g) for g in grid)
        self.mid = tuple(_ceil_div(g, u) for g, u in zip(self.grid, up, strict=True))
        self.base = tuple(_ceil_div(g, u) for g, u in zip(self.mid, up, strict=True))
        self.dense = nn.Linear(cfg.latent_size + int(has_angle),
                               cfg.dense_channels * int(np.prod(self.base)))
        c1, c2, c3 = cfg.gen_channels
        k1, k2, k3, k4 = cfg.gen_kernels
        self.conv1 = _Conv3d(cfg.dense_channels, c1, k1)
        self.bn1 = nn.BatchNorm3d(c1, momentum=cfg.bn_momentum)
        self.conv2 = _Conv3d(c1, c2, k2)
        self.bn2 = nn.BatchNorm3d(c2, momentum=cfg.bn_momentum)
        self.subpixel = cfg.gen_subpixel
        self.conv3 = _Conv3d(c2, c3 * int(np.prod(up)) if self.subpixel else c3, k3)
        if self.subpixel and cfg.gen_icnr:
            _icnr_(self.conv3.conv, int(np.prod(up)))
        self.conv4 = _Conv3d(c3, 1, k4, bias=False)
        nn.init.xavier_normal_(self.conv4.conv.weight)
        self.resize = {"mode": cfg.gen_upsample_mode}
        if cfg.gen_upsample_mode == "trilinear":
            self.resize["align_corners"] = False
        self.masked = not bool(mask.all())
        self.register_buffer("mask", mask.reshape(1, 1, *self.grid).float(), persistent=False)

    def _shuffle(self, x: Tensor) -> Tensor:
        """``(B, c * ux * uy * uz, m0, m1, m2)`` -> ``(B, c, rows, cols, layers)``: channel
        ``(ch, i, j, k)`` of middle cell ``(a, b, d)`` becomes cell
        ``(a * ux + i, b * uy + j, d * uz + k)``; cells beyond the grid are dropped."""
        ux, uy, uz = self.cfg.gen_upsample
        m0, m1, m2 = self.mid
        rows, cols, layers = self.grid
        x = x.reshape(-1, self.cfg.gen_channels[2], ux, uy, uz, m0, m1, m2)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(-1, self.cfg.gen_channels[2], m0 * ux, m1 * uy, m2 * uz)
        return x[:, :, :rows, :cols, :layers]

    def forward(self, latent: Tensor, energy_gev: Tensor,
                angle_scaled: Tensor | None = None) -> Tensor:
        s = self.cfg.leaky_slope
        h = latent * (energy_gev / self.cfg.energy_scale_gev).unsqueeze(1)
        if self.has_angle:
            h = torch.cat([h, angle_scaled.unsqueeze(1)], dim=1)
        x = self.dense(h).reshape(-1, self.cfg.dense_channels, *self.base)
        x = self.bn1(F.leaky_relu(self.conv1(x), s))
        x = F.interpolate(x, size=self.mid, **self.resize)
        x = self.bn2(F.leaky_relu(self.conv2(x), s))
        if self.subpixel:
            x = self._shuffle(self.conv3(x))
        else:
            x = self.conv3(F.interpolate(x, size=self.grid, **self.resize))
        x = F.leaky_relu(x, s)
        x = self.conv4(x)
        x = F.softplus(x) if self.cfg.gen_output == "softplus" else F.relu(x)
        return x * self.mask if self.masked else x


N_MOMENTS = 11
N_CONDITIONS = 2  # scaled primary energy and polar angle
_MOMENT_HIT_MEV = 0.1  # a cell counts as hit above this deposit, as in the evaluation


def shower_moments(mev: Tensor) -> Tensor:
    """Differentiable shower features of pixel grids ``(B, 1, X, Y, Z)`` in MeV:
    ``(B, 11)``: log10 of the ECAL sum (MeV) and of the number of hit cells (a soft count
    above 0.1 MeV), the energy fractions in the front, middle and back thirds of the
    depth, and the barycentre and RMS width along x, y and z in cells (the shower
    features of Carminati et al., CHEP 2019, figure 3a, less the conditions)."""
    e = mev[:, 0].clamp_min(0.0)  # (B, X, Y, Z)
    total = e.sum(dim=(1, 2, 3)).clamp_min(1e-3)
    hits = torch.sigmoid((torch.log10(e + 1e-6) - math.log10(_MOMENT_HIT_MEV)) / 0.05)
    feats = [torch.log10(total), torch.log10(hits.sum(dim=(1, 2, 3)) + 1.0)]
    depth = e.sum(dim=(1, 2))  # (B, Z)
    thirds = torch.tensor_split(depth, 3, dim=1)
    feats += [t.sum(dim=1) / total for t in thirds]
    means, widths = [], []
    for dims in ((2, 3), (1, 3), (1, 2)):  # the profile along x, y, z
        profile = e.sum(dim=dims)  # (B, n)
        coord = torch.arange(profile.shape[1], device=e.device, dtype=e.dtype)
        m1 = (profile * coord).sum(dim=1) / total
        m2 = (profile * coord * coord).sum(dim=1) / total - m1 * m1
        means.append(m1)
        widths.append(m2.clamp_min(1e-6).sqrt())
    return torch.stack(feats + means + widths, dim=1)


_BATCH_FEATURES = 16  # discriminator features computed from the batch's statistics


def batch_statistics(z: Tensor, pairs: Tensor) -> Tensor:
    """Statistics of a batch of feature vectors ``z`` ``(B, k)``: ``(1, k + P)``, the log
    of each feature's standard deviation and the Pearson correlation of each of the ``P``
    pairs ``pairs`` ``(2, P)`` (indices into the features): the minibatch standard
    deviation of Karras et al., "Progressive Growing of GANs", arXiv:1710.10196, with the
    correlations added. A batch of one shower has no spread: the standard deviations are
    then 1e-3 and the correlations 0."""
    centred = z - z.mean(dim=0)
    std = (centred.pow(2).mean(dim=0) + 1e-6).sqrt()
    unit = centred / std
    corr = (unit[:, pairs[0]] * unit[:, pairs[1]]).mean(dim=0)
    return torch.cat([std.log(), corr]).unsqueeze(0)


class Gan3DDiscriminator(nn.Module):
    """Pixel grids ``(B, 1, rows, cols, layers)`` -> ``(logit, energy, angle)``, each ``(B,)``:
    the real/fake logit, the regressed ``E / energy_scale_gev`` and the regressed polar
    angle in radians.

    Args:
        grid: the full grid ``(rows, cols, layers)``.
        cfg: the 3DGAN config.
        energy_init, angle_init: starting biases of the two regression heads (the middle
            of the trained ranges, so that the percentage errors start finite and small).
    """

    def __init__(self, grid: Triple, cfg: Gan3DConfig, energy_init: float = 1.0,
                 angle_init: float = math.pi / 2):
        super().__init__()
        self.cfg = cfg
        channels = (1, *cfg.disc_channels)
        self.convs = nn.ModuleList(
            _Conv3d(channels[i], channels[i + 1], cfg.disc_kernels[i], cfg.disc_strides[i])
            for i in range(4))
        self.norms = nn.ModuleList(
            nn.BatchNorm3d(channels[i + 1], momentum=cfg.bn_momentum) for i in range(1, 4))
        size = list(grid)
        for stride in cfg.disc_strides:
            size = [(n - 1) // stride + 1 for n in size]
        self.pool = tuple(min(cfg.disc_pool, n) for n in size)
        size = [n // p for n, p in zip(size, self.pool, strict=True)]
        n_features = cfg.disc_channels[-1] * int(np.prod(size))
        if cfg.disc_moments or cfg.disc_batch_moments:
            # the training showers' feature mean and spread (set by Gan3D.prepare)
            self.register_buffer("moment_mean", torch.zeros(N_MOMENTS))
            self.register_buffer("moment_std", torch.ones(N_MOMENTS))
        if cfg.disc_moments:
            self.moments = nn.Sequential(nn.Linear(N_MOMENTS, 32), nn.LeakyReLU(cfg.leaky_slope),
                                         nn.Linear(32, 32), nn.LeakyReLU(cfg.leaky_slope))
            n_features += 32
        if cfg.disc_batch_moments:
            n_batch = N_MOMENTS + N_CONDITIONS
            # the training showers' mean and spread of the scaled conditions (Gan3D.prepare)
            self.register_buffer("condition_mean", torch.zeros(N_CONDITIONS))
            self.register_buffer("condition_std", torch.ones(N_CONDITIONS))
            self.register_buffer("pairs", torch.triu_indices(n_batch, n_batch, 1),
                                 persistent=False)
            n_stats = n_batch + self.pairs.shape[1]
            self.batch_moments = nn.Sequential(nn.Linear(n_stats, _BATCH_FEATURES),
                                               nn.LeakyReLU(cfg.leaky_slope))
            n_features += _BATCH_FEATURES
        self.real_fake = nn.Linear(n_features, 1)
        self.energy = nn.Linear(n_features, 1)
        self.angle = nn.Linear(n_features, 1)
        with torch.no_grad():
            self.energy.bias.fill_(energy_init)
            self.angle.bias.fill_(angle_init)

    def forward(self, pixels: Tensor, conditions: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """``conditions``: ``(B, 2)`` the scaled primary energy and polar angle the
        showers were generated for (real ones: their own); needed with
        ``disc_batch_moments``, unused otherwise.

        Raises:
            ValueError: ``disc_batch_moments`` without ``conditions``.
        """
        s = self.cfg.leaky_slope
        x = F.leaky_relu(self.convs[0](pixels), s)
        for conv, norm in zip(self.convs[1:], self.norms, strict=True):
            x = norm(F.leaky_relu(conv(x), s))
        x = F.avg_pool3d(x, self.pool).flatten(1)
        if self.cfg.disc_moments or self.cfg.disc_batch_moments:
            mev = to_mev(pixels, self.cfg.voxel_power, self.cfg.voxel_scale_mev)
            z = (shower_moments(mev) - self.moment_mean) / self.moment_std
            if self.cfg.disc_moments:
                x = torch.cat([x, self.moments(z)], dim=1)
            if self.cfg.disc_batch_moments:
                if conditions is None:
                    raise ValueError("disc_batch_moments: the discriminator needs the "
                                     "showers' conditions")
                c = (conditions - self.condition_mean) / self.condition_std
                stats = self.batch_moments(batch_statistics(torch.cat([z, c], dim=1),
                                                            self.pairs))
                x = torch.cat([x, stats.expand(len(x), -1)], dim=1)
        return (self.real_fake(x).squeeze(1), self.energy(x).squeeze(1),
                self.angle(x).squeeze(1))


def _set_standardisation(mean: Tensor, std: Tensor, values: Tensor) -> None:
    """Set the buffers ``mean`` and ``std`` ``(k,)`` to the columns' mean and spread of
    ``values`` ``(n, k)`` (a spread of at least 1e-3; 1 when ``n`` < 2)."""
    mean.copy_(values.mean(dim=0))
    std.copy_(values.std(dim=0).nan_to_num(1.0).clamp_min(1e-3) if len(values) > 1
              else torch.ones_like(std))


# ---- the model ------------------------------------------------------------------------------


@register_model("3dgan")
class Gan3D(GenerativeModel):
    """3DGAN (see the module docstring), conditioned on primary energy and polar angle."""

    Config = Gan3DConfig
    wrapped_names = ("generator", "discriminator")
    condition_sets = (("energy", "angle"),)
    progress_metrics = ("d_loss_real", "d_loss_fake", "g_loss")

    @classmethod
    def tiny_config(cls) -> Gan3DConfig:
        return Gan3DConfig(latent_size=8, dense_channels=2, gen_channels=(3, 2, 2),
                           gen_kernels=((2, 2, 2), (3, 3, 2), (2, 2, 2), (2, 2, 2)),
                           gen_upsample=(2, 2, 1), disc_channels=(2, 2, 2, 2),
                           disc_kernels=((2, 2, 2),) * 4, disc_strides=(1, 2, 1, 1))

    def __init__(self, geometry: Geometry, config: Gan3DConfig, conditioning: Conditioning):
        super().__init__(geometry, config, conditioning)
        rows = max(layer.shape[0] for layer in geometry.layers)
        cols = max(layer.shape[1] for layer in geometry.layers)
        self.grid: Triple = (rows, cols, geometry.n_layers)
        # the window the networks see (the whole grid unless config.window is set)
        wr, wc = (min(w, n) if w else n for w, n in zip(config.window, (rows, cols),
                                                         strict=True))
        r0, c0 = (rows - wr) // 2, (cols - wc) // 2
        self.window = (slice(r0, r0 + wr), slice(c0, c0 + wc))
        self.window_pad = (0, 0, c0, cols - c0 - wc, r0, rows - r0 - wr)
        net_grid: Triple = (wr, wc, geometry.n_layers)
        self.uniform = all(layer.shape == (rows, cols) for layer in geometry.layers)
        mask = torch.zeros(self.grid, dtype=torch.bool)
        for i, layer in enumerate(geometry.layers):
            mask[:layer.shape[0], :layer.shape[1], i] = True
        e_lo, e_hi = conditioning.energy
        a_lo, a_hi = conditioning.angle or (90.0, 90.0)
        if config.mirror_y and not torch.equal(mask[self.window], mask[self.window].flip(1)):
            raise CaloforgeError("3dgan mirror_y needs layers symmetric in y (the same "
                                 "columns in every layer)")
        self.generator = Gan3DGenerator(net_grid, mask[self.window], True, config)
        self.discriminator = Gan3DDiscriminator(
            net_grid, config,
            energy_init=mev_to_gev(0.5 * (e_lo + e_hi)) / config.energy_scale_gev,
            angle_init=math.radians(0.5 * (a_lo + a_hi)))
        # expected deposited fraction (ECAL sum / E) = c0 + c1 a + c2 a^2 with a the scaled
        # angle; fitted to the training showers in prepare()
        self.register_buffer("deposit_coeffs", torch.tensor([1.0, 0.0, 0.0]))
        if config.response_normalisation:
            # relative spread of ECAL sum / E around the fitted fraction; from prepare()
            self.register_buffer("deposit_spread", torch.tensor(0.0))

    # ---- layout and preprocessing ------------------------------------------------------

    def voxels_to_grid(self, voxels: Tensor) -> Tensor:
        """Flat ``(B, n_voxels)`` -> ``(B, 1, rows, cols, layers)``, padding zeros."""
        b = voxels.shape[0]
        rows, cols, n_layers = self.grid
        if self.uniform:
            return voxels.reshape(b, 1, n_layers, rows, cols).permute(0, 1, 3, 4, 2)
        planes = []
        for i, layer in enumerate(self.geometry.layers):
            r, c = layer.shape
            x = voxels[:, self.geometry.layer_slice(i)].reshape(b, r, c)
            planes.append(F.pad(x, (0, cols - c, 0, rows - r)))
        return torch.stack(planes, dim=-1).unsqueeze(1)

    def crop(self, grid: Tensor) -> Tensor:
        """Full grids ``(B, 1, rows, cols, layers)`` -> the networks' window."""
        return grid[:, :, self.window[0], self.window[1]]

    def uncrop(self, window: Tensor) -> Tensor:
        """The networks' window -> full grids, zeros outside (inverse of :meth:`crop`)."""
        return F.pad(window, self.window_pad) if any(self.window_pad) else window

    def grid_to_voxels(self, grid: Tensor) -> Tensor:
        """Inverse of :meth:`voxels_to_grid`: crop each layer and flatten."""
        b = grid.shape[0]
        if self.uniform:
            return grid.squeeze(1).permute(0, 3, 1, 2).reshape(b, -1)
        parts = [grid[:, 0, :layer.shape[0], :layer.shape[1], i].reshape(b, -1)
                 for i, layer in enumerate(self.geometry.layers)]
        return torch.cat(parts, dim=1)

    def _units(self, mev: Tensor) -> Tensor:
        return to_units(mev, self.config.voxel_power, self.config.voxel_scale_mev)

    def _mev(self, units: Tensor) -> Tensor:
        return to_mev(units, self.config.voxel_power, self.config.voxel_scale_mev)

    def _scaled_angle(self, angle_deg: Tensor) -> Tensor:
        return scale_angle(angle_deg, self.conditioning.angle)

    def expected_deposit_gev(self, energy_gev: Tensor, angle_deg: Tensor) -> Tensor:
        """Expected ECAL sum in GeV for primary energies (GeV) and angles (degrees)."""
        a = self._scaled_angle(angle_deg)
        c = self.deposit_coeffs
        return energy_gev * (c[0] + c[1] * a + c[2] * a * a)

    def prepare(self, showers: ShowerSet) -> None:
        fraction = showers.total_energy().astype(np.float64) / showers.incident_energy
        angle = showers.angle if showers.angle is not None else np.full(len(showers), 90.0)
        a = self._scaled_angle(torch.as_tensor(angle, dtype=torch.float64)).numpy()
        design = np.stack([np.ones_like(a), a, a * a], axis=1)
        if len(showers) < 3 or np.ptp(a) < 1e-6:
            coeffs = np.array([fraction.mean(), 0.0, 0.0])
        else:
            coeffs = np.linalg.lstsq(design, fraction, rcond=None)[0]
        self.deposit_coeffs.copy_(torch.as_tensor(coeffs, dtype=torch.float32))
        if self.config.response_normalisation:
            relative = fraction / (design @ coeffs) - 1.0
            self.deposit_spread.fill_(float(relative.std()) if len(showers) > 1 else 0.0)
        if self.config.disc_moments or self.config.disc_batch_moments:
            sample = showers[:2000]
            with torch.no_grad():
                grid = self.crop(self.voxels_to_grid(torch.as_tensor(sample.voxels)))
                feats = torch.cat([shower_moments(grid[i:i + 256].float())
                                   for i in range(0, len(grid), 256)])
            _set_standardisation(self.discriminator.moment_mean,
                                 self.discriminator.moment_std, feats)
        if self.config.disc_batch_moments:
            cond = self._disc_conditions(torch.as_tensor(showers.conditions()))
            _set_standardisation(self.discriminator.condition_mean,
                                 self.discriminator.condition_std, cond)

    def _disc_conditions(self, conditions: Tensor) -> Tensor:
        """``(B, 2)`` conditions (MeV, degrees) -> the discriminator's scaled energy and
        angle ``(B, 2)``."""
        energy = mev_to_gev(conditions[:, 0].float()) / self.config.energy_scale_gev
        return torch.stack([energy, self._scaled_angle(conditions[:, 1].float())], dim=1)

    # ---- sampling --------------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.latent_size + int(c.response_normalisation) + int(c.mirror_y),)

    def _generate_units(self, gen: nn.Module, latent: Tensor, conditions: Tensor) -> Tensor:
        """Pixel grids ``(B, 1, *window)`` in network units from latent vectors and
        conditions (MeV, degrees); with ``response_normalisation`` rescaled to the drawn
        ECAL sum (the last latent component draws the response); with ``mirror_y`` the
        last one mirrors y and the response's is the one before it."""
        if self.config.mirror_y:  # the last component (not the network's) mirrors y
            mirrored = (latent[:, -1] > 0).reshape(-1, 1, 1, 1, 1)
            units = self._generate_units_of(gen, latent[:, :-1], conditions)
            return torch.where(mirrored, units.flip(3), units)
        return self._generate_units_of(gen, latent, conditions)

    def _generate_units_of(self, gen: nn.Module, latent: Tensor, conditions: Tensor) -> Tensor:
        """:meth:`_generate_units` before any mirroring."""
        energy_gev = mev_to_gev(conditions[:, 0])
        angle_scaled = self._scaled_angle(conditions[:, 1])
        if not self.config.response_normalisation:
            return gen(latent, energy_gev, angle_scaled)
        units = gen(latent[:, :-1], energy_gev, angle_scaled)
        total = self._mev(units).sum(dim=(1, 2, 3, 4))
        target = gev_to_mev(self.expected_deposit_gev(energy_gev, conditions[:, 1]))
        target = target * (1.0 + self.deposit_spread * latent[:, -1])
        # E -> E * k is u -> u * k ** power in network units
        k = target.clamp_min(0.0) / total.clamp_min(1e-3)
        return units * k.pow(self.config.voxel_power).reshape(-1, 1, 1, 1, 1)

    def decode(self, latent: Tensor, conditions: Tensor) -> Tensor:
        # small pieces bound the memory of the full-resolution activations
        pieces = self.decode_in_pieces(latent, conditions, _CPU_CHUNK)
        if pieces is not None:
            return pieces
        units = self._generate_units(self.generator, latent, conditions)
        return self.grid_to_voxels(self.uncrop(self._mev(units)))

    # ---- training ----------------------------------------------------------------------------

    def configure_optimizers(self) -> None:
        c = self.config
        self.optimizers = {
            "generator": torch.optim.RMSprop(self.generator.parameters(), lr=c.gen_lr,
                                             alpha=c.rmsprop_alpha, eps=1e-7),
            "discriminator": torch.optim.RMSprop(self.discriminator.parameters(),
                                                 lr=c.disc_lr, alpha=c.rmsprop_alpha,
                                                 eps=1e-7),
        }

    def _spectrum(self, units: Tensor) -> Tensor:
        """Pixel counts per intensity bin, ``(B, n_bins)``, of a batch of pixel grids."""
        return pixel_spectrum(self._mev(units), self.config.spectrum_edges_mev,
                              self.config.spectrum_softness)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        c = self.config
        w_g, w_p, w_a, w_e, w_b = c.loss_weights
        real = self._units(self.crop(self.voxels_to_grid(batch["voxels"])))
        conditions = batch["conditions"]
        n = conditions.shape[0]
        gen, disc = self.module("generator"), self.module("discriminator")
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        device = conditions.device
        ones = torch.ones(n, device=device)
        zeros = torch.zeros(n, device=device)

        def targets(cond: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            energy_gev = mev_to_gev(cond[:, 0])
            return (energy_gev, self._scaled_angle(cond[:, 1]),
                    energy_gev / c.energy_scale_gev, torch.deg2rad(cond[:, 1]))

        def generate(cond: Tensor) -> Tensor:
            return self._generate_units(gen, self.draw_latent(n), cond)

        def fake_conditions() -> tuple[Tensor, Tensor]:
            order = torch.randperm(n, device=device)
            return conditions[order], order

        with torch.no_grad():
            real_spectra = self._spectrum(real)

        def spectrum_loss(fake: Tensor, order: Tensor) -> Tensor:
            if c.spectrum_target == "shower":  # the real shower of the same conditions
                return mape(self._spectrum(fake), real_spectra[order], c.mape_floor)
            return mape(self._spectrum(fake).mean(dim=0), real_spectra.mean(dim=0),
                        c.mape_floor)

        # discriminator: a real batch, then a generated one (kept apart for batch norm);
        # deposited energy and spectrum depend on the image only, not on its weights
        disc.requires_grad_(True)
        _, _, e_true, a_true = targets(conditions)
        opt_d.zero_grad(set_to_none=True)
        logit, e_reg, a_reg = disc(real, self._disc_conditions(conditions))
        d_real = F.binary_cross_entropy_with_logits(logit, flip_labels(ones, c.label_flip_prob))
        d_e_real, d_a_real = mape(e_reg, e_true), mae(a_reg, a_true)
        (w_g * d_real + w_p * d_e_real + w_a * d_a_real).backward()
        opt_d.step()
        p_real = torch.sigmoid(logit).mean().item()

        fc, _ = fake_conditions()
        _, _, e_fake, a_fake = targets(fc)
        with torch.no_grad():
            fake = generate(fc)
        opt_d.zero_grad(set_to_none=True)
        logit, e_reg, a_reg = disc(fake, self._disc_conditions(fc))
        d_fake = F.binary_cross_entropy_with_logits(logit, flip_labels(zeros, c.label_flip_prob))
        d_e_fake, d_a_fake = mape(e_reg, e_fake), mae(a_reg, a_fake)
        (w_g * d_fake + w_p * d_e_fake + w_a * d_a_fake).backward()
        opt_d.step()
        p_fake = torch.sigmoid(logit).mean().item()

        # generator, trained twice with the discriminator frozen
        disc.requires_grad_(False)
        sums = dict.fromkeys(("g_loss", "g_energy_mape", "g_angle_mae", "g_ecal_mape",
                              "g_spectrum_mape"), 0.0)
        for _ in range(c.generator_steps):
            fc, order = fake_conditions()
            energy_gev, _, e_t, a_t = targets(fc)
            opt_g.zero_grad(set_to_none=True)
            fake = generate(fc)
            logit, e_reg, a_reg = disc(fake, self._disc_conditions(fc))
            adv = F.binary_cross_entropy_with_logits(logit, ones)
            l_p, l_a = mape(e_reg, e_t), mae(a_reg, a_t)
            ecal = mev_to_gev(self._mev(fake).sum(dim=(1, 2, 3, 4)))
            l_e = mape(ecal, self.expected_deposit_gev(energy_gev, fc[:, 1]))
            l_b = spectrum_loss(fake, order)
            (w_g * adv + w_p * l_p + w_a * l_a + w_e * l_e + w_b * l_b).backward()
            opt_g.step()
            for key, value in zip(sums, (adv, l_p, l_a, l_e, l_b), strict=True):
                sums[key] += value.item() / c.generator_steps
        disc.requires_grad_(True)
        return {
            "d_loss_real": d_real.item(), "d_loss_fake": d_fake.item(),
            "d_energy_mape": 0.5 * (d_e_real.item() + d_e_fake.item()),
            "d_angle_mae": 0.5 * (d_a_real.item() + d_a_fake.item()),
            "d_real": p_real, "d_fake": p_fake, **sums,
        }
