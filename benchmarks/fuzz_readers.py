"""The long fuzzing run of every weights-file reader: coverage-guided, with atheris (libFuzzer).

    pip install -e ".[test,fuzz]"
    nice -n 19 python benchmarks/fuzz_readers.py --minutes 30 --out /tmp/fuzz

One process. The first byte of an input picks the kind of file, the rest is the file: the
readers of tests/weight_files.py (Caffe model and prototxt, PyTorch zip and legacy, TF1
index and state file, safetensors, senet weights file), the same numbers-first inputs as
`weight_files.structured`, and two HDF5 kinds that run in a forked child under an alarm
(Keras files through the probe's own code, then the rest of the senet reader; senet files
with their checksum redone, which only a crafted file has). Seeds: the small valid files of
weight_files.seeds and every crash class of tests/test_untrusted_files.py.

The invariant: a reader returns, or raises one SenetError that names the file in one line;
within --seconds of CPU time; without a MemoryError under a --memory-mb address-space
limit, and without raising the process's peak memory by 256 MB at once. A violation is a finding: its input is saved in OUT/findings/ (one per kind, type and
place) and the run goes on. An HDF5 library hang or crash in the forked child is not a
finding where the probe stands between it and the user (it is what the probe is for); it is
counted, and its input kept in OUT/hdf5/. Counts go to OUT/stats.json every 30 s and at the
end. (`SENET_FUZZ_EXAMPLES=N pytest tests/test_fuzz_readers.py` is the run without atheris.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import signal
import sys
import tempfile
import time
import traceback

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests")]

with atheris.instrument_imports(include=["senet", "zipfile", "pickletools", "weight_files"]):
    import weight_files as wf
    from senet.errors import SenetError
    from senet.weights import caffe, native, sources, tf1_checkpoint, torch_format  # noqa: F401

PLAIN = ["caffemodel", "prototxt", "torch_zip", "torch_legacy", "tf1_index", "tf1_state",
         "safetensors", "senet"]
KINDS = PLAIN + [f"structured:{k}" for k in wf.STRUCTURED] + ["hdf5:keras", "hdf5:signed"]


class TooSlow(Exception):
    pass


def _too_slow(signum, frame):
    raise TooSlow()


class Run:
    def __init__(self, out, seconds):
        self.out, self.seconds = out, seconds
        self.peak, self.memory_step = 1 << 40, 256 << 20  # the peak is set by the first input
        self.work = tempfile.mkdtemp(prefix="senet-fuzz-", dir="/dev/shm"
                                     if os.path.isdir("/dev/shm") else None)
        self.stats = {"executions": 0, "started": time.time(), "findings": {},
                      "by_kind": {k: {"returned": 0, "refused": 0, "finding": 0} for k in KINDS},
                      "hdf5": {"hang": 0, "crash": 0, "error": 0, "ok": 0}}
        self.last_flush = 0.0
        for sub in ("findings", "hdf5"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)

    # ----------------------------------------------------------------------- one input
    def one(self, data: bytes):
        if not data:
            return
        kind = KINDS[data[0] % len(KINDS)]
        body = data[1:]
        self.stats["executions"] += 1
        if self.stats["executions"] == 1:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
        try:
            if kind.startswith("hdf5:"):
                outcome = self.forked(kind, body)
            else:
                outcome = self.in_process(kind, body)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
                grew, self.peak = peak - self.peak, max(peak, self.peak)
                if grew > self.memory_step:  # a new high 256 MB above the last: a spike
                    raise MemoryError(f"the process grew by {grew >> 20} MB on one input")
        except Exception as err:  # a violation of the invariant
            self.finding(kind, data, err)
            outcome = "finding"
        self.stats["by_kind"][kind][outcome] += 1
        if time.monotonic() - self.last_flush > 30:
            self.flush()

    def in_process(self, kind, body):
        if kind.startswith("structured:"):
            kind = kind.split(":", 1)[1]
            fdp = atheris.FuzzedDataProvider(body)
            body = wf.structured(kind, lambda lo, hi: fdp.ConsumeIntInRange(lo, hi))
        path = wf.write_case(os.path.join(self.work, "case"), kind, body)
        read = native.read if kind == "senet" else wf.READERS[kind].read  # no probe: no child
        signal.setitimer(signal.ITIMER_VIRTUAL, self.seconds)
        try:
            read(path)
            return "returned"
        except SenetError as err:
            wf.check_message(err, os.path.dirname(path) if kind.startswith("tf1") else path)
            return "refused"
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)

    def forked(self, kind, body):
        """HDF5 in a child: the library can loop forever or crash on a crafted file."""
        path = os.path.join(self.work, "case.weights.h5")
        if kind == "hdf5:signed":  # a senet file whose HDF5 part is `body`, checksum redone
            header = native._header_bytes({"model": "se_resnet18", "input": "caffe",
                                           "classes": 3}, hashlib.sha256(body).hexdigest(), 512)
            body = header.ljust(512, b"\0") + body
        with open(path, "wb") as f:
            f.write(body)
        report = os.path.join(self.work, "child.txt")
        if os.path.exists(report):
            os.remove(report)
        pid = os.fork()
        if pid == 0:  # the child: exit 0 (invariant kept), 3 (violated, report written)
            code = 0
            try:
                signal.signal(signal.SIGVTALRM, signal.SIG_DFL)  # a hang in C ends the child
                signal.setitimer(signal.ITIMER_VIRTUAL, self.seconds)
                self.child(kind, path)
            except BaseException:
                with open(report, "w") as f:
                    f.write(traceback.format_exc())
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            what = "hang" if os.WTERMSIG(status) == signal.SIGVTALRM else "crash"
            self.stats["hdf5"][what] += 1
            name = f"{kind.split(':')[1]}-{what}-{hashlib.sha1(body).hexdigest()[:12]}.h5"
            if len(os.listdir(os.path.join(self.out, "hdf5"))) < 200:
                with open(os.path.join(self.out, "hdf5", name), "wb") as f:
                    f.write(body)
            if kind == "hdf5:signed":  # no probe stands in front of native.read
                raise RuntimeError(f"the HDF5 library {what}s in native.read on a crafted "
                                   "senet file with a valid checksum")
            return "refused"
        if os.WEXITSTATUS(status) == 3:
            with open(report) as f:
                raise RuntimeError(f.read().strip().splitlines()[-1])
        return "refused" if os.WEXITSTATUS(status) == 4 else "returned"

    def child(self, kind, path):
        if kind == "hdf5:keras":
            try:
                native._probe_child(path)  # what the probe's child process runs
            except SystemExit:
                os._exit(4)  # refused by the probe
            except Exception:
                os._exit(4)  # the probe's child fails: the probe refuses the file
            native.probe = lambda path: None  # passed: now the rest, in this process
            read = sources.read_native
        else:
            read = native.read
        try:
            read(path)
        except SenetError as err:
            wf.check_message(err, path)
            os._exit(4)

    # ----------------------------------------------------------------------- bookkeeping
    def finding(self, kind, data, err):
        tb = traceback.extract_tb(err.__traceback__)
        place = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
        key = f"{kind}|{type(err).__name__}|{place}|{re.sub(r'[0-9]+', 'N', str(err))[:60]}"
        entry = self.stats["findings"].setdefault(key, {"count": 0, "file": None})
        entry["count"] += 1
        if entry["file"] is None:
            name = f"{kind.replace(':', '-')}-{type(err).__name__}-" \
                   f"{hashlib.sha1(data).hexdigest()[:12]}"
            entry["file"] = os.path.join(self.out, "findings", name + ".bin")
            with open(entry["file"], "wb") as f:
                f.write(data)
            with open(entry["file"][:-4] + ".txt", "w", errors="backslashreplace") as f:
                f.write(f"{kind}\n{''.join(traceback.format_exception(err))}")
            print(f"\nFINDING {ascii(key)}\n", file=sys.stderr, flush=True)

    def flush(self):
        self.last_flush = time.monotonic()
        self.stats["seconds"] = round(time.time() - self.stats["started"], 1)
        with open(os.path.join(self.out, "stats.json"), "w") as f:
            json.dump(self.stats, f, indent=1)


def write_corpus(directory):
    """Seeds: each kind's valid files and the crash classes, with their kind byte."""
    import test_untrusted_files as cases

    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp()
    seeds = wf.seeds(tmp)
    inputs = []
    for kind in PLAIN:
        inputs += [(kind, s) for s in seeds[kind]]
    for kind, make, _ in cases.CASES.values():
        content = make(tmp)
        content = content[0] if isinstance(content, tuple) else content
        if kind in PLAIN and len(content) < 1 << 16:
            inputs.append((kind, content))
    inputs += [(f"structured:{k}", os.urandom(64)) for k in wf.STRUCTURED]
    inputs.append(("hdf5:keras", seeds["keras_h5"][0]))
    inputs.append(("hdf5:keras", wf.hdf5_btree_loop(seeds["keras_h5"][0], "sibling")))
    inputs.append(("hdf5:signed", seeds["senet"][0][512:]))
    for kind, content in inputs:
        data = bytes([KINDS.index(kind)]) + content
        with open(os.path.join(directory, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    return len(inputs)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--out", default="fuzz-out")
    p.add_argument("--seconds", type=float, default=5, help="CPU seconds per input")
    p.add_argument("--memory-mb", type=int, default=2048,
                   help="address space a reader may add (RLIMIT_AS above the start)")
    args, libfuzzer = p.parse_known_args()
    corpus = os.path.join(args.out, "corpus")
    n = write_corpus(corpus)
    print(f"{n} seeds in {corpus}", file=sys.stderr)
    run = Run(args.out, args.seconds)
    signal.signal(signal.SIGVTALRM, _too_slow)
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
    limit = vm + (args.memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    atheris.Setup([sys.argv[0], *libfuzzer, corpus, f"-max_total_time={int(args.minutes * 60)}",
                   "-max_len=20000", "-timeout=300", "-rss_limit_mb=0", "-print_final_stats=1",
                   f"-artifact_prefix={os.path.join(args.out, '')}"],
                  run.one)
    import atexit

    atexit.register(run.flush)
    try:
        atheris.Fuzz()
    finally:
        run.flush()


if __name__ == "__main__":
    main()
