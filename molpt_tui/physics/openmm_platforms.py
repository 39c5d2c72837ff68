"""OpenMM platforms: which ones this machine has, a cheap check of a configured one, and the
Context settings every part of molpt-tui uses for them."""
from __future__ import annotations

from typing import Any

from ..errors import UserError, setting_phrase
from .engine_protocol import Precision

# The platforms molpt-tui knows how to configure, in the order they are listed to the user.
PLATFORMS = ("Reference", "CPU", "CUDA", "OpenCL")


class PlatformUnavailableError(RuntimeError):
    """No Context could be made on the requested platform(s) of this machine."""


def available_platforms() -> list[str]:
    """The known platforms whose plugin OpenMM loaded here, in ``PLATFORMS`` order."""
    import openmm

    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    return [p for p in PLATFORMS if p in names]


def check_platform(name: str, key: str, *, allow_auto: bool = True) -> None:
    """Raise a one-line UserError naming ``key`` when platform ``name`` is not usable here.

    Cheap (no Context is made), so preflight can call it before anything starts. ``key`` is
    what the user set, e.g. ``energy.platform`` or ``data.platform``.
    """
    if allow_auto and name == "auto":
        return
    available = available_platforms()
    if name in available:
        return
    choices = ", ".join(available) + (' or "auto"' if allow_auto else "")
    if name not in PLATFORMS:
        raise UserError(f"{setting_phrase(key, name)}: not an OpenMM platform (use {choices})")
    why = _plugin_failure(name)
    raise UserError(f"{setting_phrase(key, name)}: this machine's OpenMM has no {name} platform"
                    f"{f' ({why})' if why else ''}; available here: {', '.join(available)} (set {key} to {choices})")


def _plugin_failure(name: str) -> str:
    """Why OpenMM could not load the plugin of ``name`` (a missing driver library), or ""."""
    import openmm

    for failure in openmm.Platform.getPluginLoadFailures():
        if f"libOpenMM{name}.so" in failure or f"OpenMM{name}.dll" in failure:
            # "Error loading library .../libOpenMMOpenCL.so: libOpenCL.so.1: cannot open ..."
            return str(failure).split(": ", 1)[-1][:160]
    return ""


def make_context(system_xml: str, platform: str) -> Any:
    """An OpenMM Context for energies and forces of the serialised System on ``platform``.

    The CPU platform runs one thread: parallelism comes from our worker processes. GPU
    platforms run in the best precision they offer for forces (CUDA double, OpenCL mixed).
    """
    import openmm

    system = openmm.XmlSerializer.deserialize(system_xml)
    plat = openmm.Platform.getPlatformByName(platform)
    props = {}
    if platform == "CPU":
        props["Threads"] = "1"
    if platform in ("CUDA", "OpenCL"):
        props["Precision"] = "double" if platform == "CUDA" else "mixed"
    return openmm.Context(system, openmm.VerletIntegrator(0.001), plat, props)


def precision_of(platform: str) -> Precision:
    """'double' (Reference, CUDA as configured by make_context) or 'mixed' (CPU, OpenCL:
    single-precision forces)."""
    return "double" if platform in ("Reference", "CUDA") else "mixed"
