"""Peak extra RSS of a piece of code, measured in a fresh Python process (Linux).

The child runs ``setup``, resets the kernel's high-water mark (``/proc/self/clear_refs``),
runs ``measured`` and reports ``VmHWM - VmRSS before`` as ``extra`` (bytes), with whatever
``measured`` left in a dict named ``found``. VmHWM is the process's own peak: ``ru_maxrss``
keeps the forking parent's RSS across fork + exec, so under a big pytest it reads pytest's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_RESET = """
def _status(key):  # kB in /proc/self/status
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024

try:  # "5": the peak restarts from here (import-time and setup transients left out)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
_before = _status("VmRSS")
found = {}
"""

_REPORT = """
import json as _json
print(_json.dumps({"extra": _status("VmHWM") - _before, **found}))
"""


def peak_extra(setup: str, measured: str, *args: str, timeout: float = 600) -> dict:
    """Run ``setup`` then ``measured`` (Python source; ``sys.argv[1:]`` is ``args``) in a
    fresh interpreter at the repository root; returns ``{"extra": bytes, **found}``."""
    script = "\n".join(textwrap.dedent(part) for part in (setup, _RESET, measured, _REPORT))
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, check=True, timeout=timeout, cwd=REPO,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])
