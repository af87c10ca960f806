"""Running an upstream conformance suite binary: its output shown and kept, bounded in time.

Used by the MCS and the Gateway API conformance tests. The suite runs in ``workdir`` (where
it writes its reports); each line it prints is written to ``workdir/suite.log`` and shown
with ``prefix`` as it comes; a suite that outlives ``timeout`` is killed (it is a process
of ours, stopped by its pid) and the test fails saying where its output is.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO


def run_logged(command: Sequence[str], workdir: Path, *, prefix: str, timeout: float) -> int:
    """Run ``command`` in ``workdir`` (see the module docstring); its exit code."""
    print(f"{prefix} running {' '.join(command)} in {workdir}", flush=True)
    with open(workdir / "suite.log", "w", buffering=1) as log:
        proc = subprocess.Popen(
            list(command), cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        tee = threading.Thread(target=_tee, args=(proc.stdout, log, prefix), daemon=True)
        tee.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"{prefix} the suite ran over {timeout:.0f}s and was killed; its output is in "
                f"{workdir / 'suite.log'}"
            ) from None
        except BaseException:  # interrupted (Ctrl-C): the suite must not outlive the run
            proc.kill()
            proc.wait()
            raise
        finally:
            tee.join(timeout=30)
    return code


def _tee(source: TextIO, log: TextIO, prefix: str) -> None:
    for line in source:
        log.write(line)
        sys.stdout.write(f"{prefix} {line}")
        sys.stdout.flush()
