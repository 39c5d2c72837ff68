"""The application layer: the composition root of every command.

Each command module turns typed options from `cli` into work: it loads the config, checks
every input before anything is written (preflight), owns the run directory, installs signal
handlers, chooses the sinks and runs headless or under the TUI. Nothing below this layer sees
argparse or decides where output goes.
"""
