"""Keep third-party start-up chatter off an app's console; `METAREC_VERBOSE=1` (the CLI's `-v`) shows all of it.

What it silences, each at its narrowest point (measured on executorch 1.5.1, torch 2.13.0, torchao 0.18.0):
- `import executorch.runtime` imports executorch.exir, which imports torchao: torchao logs "Failed to load
  _C_mxfp8/_C_cutlass" (GPU kernels, not built for this CPU wheel) and torch's pytree logs a `KernelPreference`
  deprecation, both through `logging` at WARNING: those two loggers are raised to ERROR for that import only;
- the C++ runtime's cpu probe writes five `[cpuinfo_utils.cpp]` lines straight to fd 2 the first time a program
  runs, with no log level reachable from Python: fd 2 goes to /dev/null for the first program load only;
- the pybindings' and training API's "experimental" warnings: ignored for those imports.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

_LOGGERS = ("torchao", "torch.utils._pytree")
_probed = False  # the C++ cpu probe runs once per process


def verbose() -> bool:
    return os.environ.get("METAREC_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def quiet_imports():
    """Import executorch / torchao inside this: their start-up warnings and log lines are dropped."""
    if verbose():
        yield
        return
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This API is experimental")
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|torchao|executorch)\b")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def first_program_load():
    """Run the process's first ExecuTorch program load inside this: the C++ cpu probe's lines go nowhere.
    Exceptions still propagate (after fd 2 is back), so a failed load is reported as usual."""
    global _probed
    if _probed or verbose():
        with quiet_imports():
            yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        with quiet_imports():
            yield
        _probed = True
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
