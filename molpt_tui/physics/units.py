"""Units: nm, kJ/mol, K. Energies on screen are beta*U in kT."""
from __future__ import annotations

# Boltzmann constant times Avogadro's number (CODATA 2018 exact values), kJ/(mol K).
KB_KJ_PER_MOL_K = 0.008314462618


def beta(temperature_k: float) -> float:
    """1/(k_B T) in mol/kJ."""
    return 1.0 / (KB_KJ_PER_MOL_K * float(temperature_k))
