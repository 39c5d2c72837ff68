"""Physics: structures and force fields, energy engines, units, replica-exchange data.

Energy engines (all behind :class:`engine_protocol.EnergyEngine`; built by :mod:`engines`,
which also holds the ``auto`` rule and the checks of a configured platform or device):

- :mod:`openmm_bridge`: OpenMM Contexts, in-process or in worker processes;
- :mod:`torch_energy`: the batched torch force field, whose constants :mod:`openmm_forces`
  reads from the System, whose support :mod:`torch_support` decides, and whose kernels are
  :mod:`torch_kernels`;
- :mod:`openmm_platforms`: which OpenMM platforms this machine has.

Submodules are imported where needed, so that importing the package costs nothing.
"""
