"""One progress line on stderr, for downloads (bytes) and for image runs (images).

On a terminal the line is redrawn in place (at most 10 times a second). Elsewhere (logs, CI)
there is no bar: the caller's own start and end lines, and one line a minute in between.
"""

from __future__ import annotations

import shutil
import sys
import time


def clock(seconds) -> str:
    """m:ss or h:mm:ss; '--:--' when unknown."""
    if seconds is None:
        return "--:--"
    m, s = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of `total` units (None: unknown); `scale` divides counts for display (1e6: MB).

    `live=None` redraws only when stderr is a terminal; True forces it, False never draws.
    """

    WIDTH = 20

    def __init__(self, total, *, unit="images", scale=1, label="", live=None, stream=None):
        self.stream = stream or sys.stderr
        if live is None:
            live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.unit, self.scale, self.label, self.live = total, unit, scale, label, live
        self.done, self.extra = 0, ""
        self.start = self.last = time.monotonic()
        self.shown = 0  # length of the live line on screen

    def _amount(self, n) -> str:
        return f"{n / self.scale:.1f}" if self.scale != 1 else str(n)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.done / elapsed
        speed = f"{rate / self.scale:.1f} {self.unit}/s"
        if self.total:
            frac = min(self.done / self.total, 1.0)
            eta = clock((self.total - self.done) / rate) if rate > 0 else clock(None)
            filled = int(frac * self.WIDTH)
            bar = ("=" * filled + (">" if filled < self.WIDTH else "")).ljust(self.WIDTH, ".")
            body = (f"[{bar}] {frac:4.0%} {self._amount(self.done)}/{self._amount(self.total)} "
                    f"{self.unit}  {speed}  ETA {eta}{self.extra}")
        else:
            body = f"{self._amount(self.done)} {self.unit}  {speed}{self.extra}"
        room = shutil.get_terminal_size((100, 20)).columns - 1 - len(body) - 2
        label = self.label if room >= len(self.label) else self.label[:max(room - 3, 0)] + "..."
        return f"{label}  {body}" if label and room > 3 else body

    def _write(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the work
            self.live = False

    def update(self, n, extra=""):
        """Count `n` more units done; `extra` is appended to the line (e.g. running accuracy)."""
        self.done += n
        self.extra = extra
        now = time.monotonic()
        if self.live:
            if not self.shown or now - self.last >= 0.1 or self.done == self.total:
                text = self.line()
                self._write("\r" + text + " " * max(self.shown - len(text), 0))
                self.shown, self.last = len(text), now
        elif now - self.last >= 60:
            self._write(self.line() + "\n")
            self.last = now

    def clear(self):
        """Remove the live line, before something else is printed."""
        if self.live and self.shown:
            self._write("\r" + " " * self.shown + "\r")
            self.shown = 0

    def note(self, message):
        """A line of its own on stderr, not mixed into the bar."""
        self.clear()
        self._write(message + "\n")

    def close(self):
        if self.live and self.shown:
            self._write("\n")
            self.shown = 0
