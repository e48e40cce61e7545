"""Run the `senet` command in this process (fast) or in a child process (the smoke tests).

`run` calls `senet.cli.main` with its output captured and the working directory and
environment changed for the call, and returns what `subprocess.run` would: returncode,
stdout, stderr. An exception that is not a SenetError propagates, so a bug fails the test
with its traceback, as it would print one on the command line.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __repr__(self):
        return f"Result({self.returncode}, stdout={self.stdout!r}, stderr={self.stderr!r})"


class _Text(io.StringIO):
    def isatty(self):  # a log, not a terminal: no live progress bars
        return False


def run(*args, cwd=None, env=None) -> Result:
    """`senet ARGS...` in this process."""
    from senet.cli import main

    out, err = _Text(), _Text()
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    try:
        if cwd is not None:
            os.chdir(cwd)
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
    return Result(code or 0, out.getvalue(), err.getvalue())


def run_subprocess(*args, cwd=None, env=None, timeout=600) -> Result:
    """`python -m senet ARGS...` in a fresh interpreter (this checkout's package)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    full_env.update({k: str(v) for k, v in (env or {}).items()})
    r = subprocess.run([sys.executable, "-m", "senet", *map(str, args)], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    return Result(r.returncode, r.stdout, r.stderr)


def one_line_error(result, command, *needles):
    """A user error: exit code 1, nothing on stdout, one line on stderr holding `needles`."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"senet {command}: error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
