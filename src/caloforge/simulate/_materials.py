"""Absorber and active materials, and the effective medium of a sampling structure.

All lengths in mm, energies in MeV.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Material", "LEAD", "LIQUID_ARGON", "TUNGSTEN", "SILICON", "mix", "ES_MEV"]

# Scale energy of multiple scattering, sqrt(4 pi / alpha) m_e c^2 (PDG).
ES_MEV = 21.2


@dataclass(frozen=True)
class Material:
    """A calorimeter material (or an effective medium).

    Attributes:
        name: short name.
        Z: (effective) atomic number.
        radiation_length: X0 in mm.
        moliere_radius: R_M in mm.
        interaction_length: nuclear interaction length lambda_I in mm.
        mip_dedx: mean energy loss of a minimum-ionising particle in MeV/mm.
        photon_length: attenuation length in mm of MeV photons at the minimum of the total
            photon cross section (Compton-dominated, about 3-5 MeV in lead), ``1 / (mu/rho
            * rho)`` with mu/rho from the NIST XCOM tables: how far the soft photons of a
            shower's halo travel.

    References:
        Particle Data Group, R. L. Workman et al., "Passage of particles through
        matter", Prog. Theor. Exp. Phys. 2022, 083C01, sec. 34.4-34.5.
        M. J. Berger et al., "XCOM: Photon Cross Sections Database", NIST Standard
        Reference Database 8 (XGAM), doi:10.18434/T48G6X.
    """

    name: str
    Z: float
    radiation_length: float
    moliere_radius: float
    interaction_length: float
    mip_dedx: float
    photon_length: float = 50.0

    @property
    def critical_energy(self) -> float:
        """E_c in MeV, from R_M = E_s X0 / E_c."""
        return ES_MEV * self.radiation_length / self.moliere_radius


# photon_length: XCOM mu/rho near 3.5 MeV: Pb 0.042 cm2/g (11.35 g/cm3), Ar 0.034 (1.396),
# W 0.041 (19.3), Si 0.032 (2.33).
LEAD = Material("Pb", 82.0, 5.6, 16.0, 176.0, 1.273, 21.0)
LIQUID_ARGON = Material("LAr", 18.0, 140.0, 90.0, 857.0, 0.2105, 211.0)
TUNGSTEN = Material("W", 74.0, 3.5, 9.3, 99.0, 2.21, 12.6)
SILICON = Material("Si", 14.0, 93.7, 48.8, 465.0, 0.3876, 134.0)


def mix(layers: list[tuple[Material, float]], name: str = "") -> Material:
    """The effective homogeneous medium of a periodic sampling structure.

    Args:
        layers: ``(material, thickness in mm)`` of one sampling period.
        name: the medium's name (default: the materials joined with ``/``).

    Radiation, interaction, Moliere and photon attenuation lengths add as inverse lengths
    weighted by the thickness fractions (for R_M this is the critical-energy-per-X0
    average, PDG eq. 34.37); Z is weighted by each material's share of radiation lengths,
    as GFlash does.
    """
    total = sum(t for _, t in layers)
    frac = [(m, t / total) for m, t in layers]
    x0 = 1.0 / sum(f / m.radiation_length for m, f in frac)
    rm = 1.0 / sum(f / m.moliere_radius for m, f in frac)
    lam = 1.0 / sum(f / m.interaction_length for m, f in frac)
    z = sum(f * x0 / m.radiation_length * m.Z for m, f in frac)
    mip = sum(f * m.mip_dedx for m, f in frac)
    # Attenuation coefficients add, weighted by the thickness fractions.
    photon = 1.0 / sum(f / m.photon_length for m, f in frac)
    return Material(name or "/".join(m.name for m, _ in layers), z, x0, rm, lam, mip, photon)
