"""physgrad: exact simulation and equilibrium-propagation training of nonlinear resistive networks."""
from physgrad.equilibrium import FREE, Equilibrium, NotSolvedError, Nudge, PhysgradError

__version__ = "0.1.0"

__all__ = ["FREE", "Equilibrium", "NotSolvedError", "Nudge", "PhysgradError", "__version__"]
