"""molpt-tui: train cross-temperature normalizing flows for parallel tempering, watched live."""

__version__ = "0.1.0"
