"""Shared fixtures. The Keras backend is chosen by KERAS_BACKEND before anything imports keras."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import collections  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import http.server  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

# No usage analytics from the tests: OpenVINO's converter and NNCF send none when their
# telemetry package cannot be imported (see senet.engines.no_telemetry; before openvino loads).
sys.modules.setdefault("openvino_telemetry", None)

# torchvision's CUDA build (pulled in by timm) segfaults when imported after TensorFlow;
# imported first, both work. timm is a test-only reference, so import it up front.
try:
    import timm  # noqa: F401
except ImportError:
    pass


@pytest.fixture(autouse=True)
def _same_draw():
    """Each test starts from one Keras seed, so the weights a model draws at build are the
    same in every run: a check such as "the outputs are not flat" holds or fails on every
    run, not on one draw in many (CI once drew a tiny net whose logits were nearly flat)."""
    import keras

    keras.utils.set_random_seed(0)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


# The test files, costliest first (CPU-seconds on TensorFlow in the full run, `python
# benchmarks/suite_cpu.py`): tests/run.sh hands whole files to its two workers in this order
# (--no-loadscope-reorder), so the long files start early and the short ones fill the end
# instead of one worker finishing a long file alone. Files not named here go last.
COSTLIEST_FIRST = [
    "test_engines", "test_pretrained", "test_timm_conversion", "test_train_distributed",
    "test_export", "test_caffe_conversion", "test_models", "test_hub", "test_train_jobs",
    "test_benchmark_cli", "test_untrusted_files", "test_cli_predict_evaluate",
    "test_caffe_reference", "test_tf1_conversion", "test_train", "test_cli_convert",
    "test_fuzz_readers", "test_tf1_checkpoint", "test_train_data"]


def _cost_rank(item):
    name = item.path.stem
    return COSTLIEST_FIRST.index(name) if name in COSTLIEST_FIRST else len(COSTLIEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_cost_rank)  # stable: each file's own order is kept
    _skip_marked(config, items)


def _skip_marked(config, items):
    """Slow tests need --runslow: the large nets, and the jobs that run a real engine, runtime
    or child process for 10 s and more (engine builds, ONNX/TFLite exports, cache stress,
    training runs, the benchmark). Those run on TensorFlow only: the JAX and
    PyTorch runs check every block kind on tiny rows and one or two full-size nets per file,
    so a large net there re-proves the same layers at the cost of minutes of XLA compilation.
    SENET_SLOW_ON_ALL_BACKENDS=1 runs them everywhere (how the README's tables were measured).
    Tests marked one_backend check backend-independent logic (tags, hashes, class orders,
    timm's own parameter counts) inside backends modules: TensorFlow runs them."""
    marks = config.getoption("-m") or ""
    runslow = config.getoption("--runslow") or ("slow" in marks and "not slow" not in marks)
    other_backend = os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow"
    if other_backend:
        same = pytest.mark.skip(reason="backend-independent: checked on TensorFlow")
        for item in items:
            if "one_backend" in item.keywords:
                item.add_marker(same)
    if other_backend and not runslow:
        # The quick run checks JAX and PyTorch on the tiny rows (test_models, test_train);
        # the reference comparisons there build full-size nets and wait for --runslow.
        later = pytest.mark.skip(reason="references on JAX/PyTorch: run with --runslow")
        for item in items:
            if "references" in item.keywords:
                item.add_marker(later)
    if not runslow:
        skip = pytest.mark.skip(reason="slow: run with --runslow")
    elif other_backend and not os.environ.get("SENET_SLOW_ON_ALL_BACKENDS"):
        skip = pytest.mark.skip(reason="slow: TensorFlow only (SENET_SLOW_ON_ALL_BACKENDS=1)")
    else:
        return
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def channels_first():
    """Build models channels_first for the duration of one test."""
    import keras

    old = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format(old)


# --------------------------------------------------------------------------- a real HTTP server

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the fake Hub's revision of every repo


class _Handler(http.server.BaseHTTPRequestHandler):
    """A Hugging Face Hub lookalike plus a plain file server, on 127.0.0.1.

    `/<org>/<repo>/resolve/<revision>/<file>` answers as the Hub does for an LFS file (the
    headers huggingface_hub reads: X-Repo-Commit, ETag = the file's sha256, sizes; 404 with
    X-Error-Code RepoNotFound / EntryNotFound), from server.hub[(repo_id, file)]; any other
    path serves server.root/<path>. server.behaviour[name] changes how one file is sent:
    "truncate", "slow", "no-length", "throttle", or ("etag", sha) to declare another sha256.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _hub_file(self, name):
        parts = name.split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        srv = self.server
        if not any(r == repo for r, _ in srv.hub):
            self._fail(404, "RepoNotFound", commit=False)
            return False
        if (repo, filename) not in srv.hub:
            self._fail(404, "EntryNotFound", commit=True)
            return False
        return srv.hub[(repo, filename)], f"{repo}/{filename}"

    def _fail(self, code, error_code, commit):
        self.send_response(code)
        self.send_header("X-Error-Code", error_code)
        if commit:
            self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, body):
        srv = self.server
        name = self.path.split("?", 1)[0].lstrip("/")
        with srv.lock:
            srv.requests[(self.command, name)] += 1
        hub = self._hub_file(name)
        if hub is False:
            return
        if hub is not None:
            data, key = hub
        else:
            key, path = name, srv.root / name
            if not path.is_file():
                self.send_error(404, "Not Found")
                return
            data = path.read_bytes()
        how = srv.behaviour.get(key)
        if how == "slow":
            time.sleep(1.5)  # longer than the tests' timeouts
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if hub is not None:
            sha = how[1] if isinstance(how, tuple) else hashlib.sha256(data).hexdigest()
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
        if how != "no-length":
            self.send_header("Content-Length", str(len(data)))
        else:
            self.close_connection = True
        self.end_headers()
        if not body:
            return
        try:
            if how == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            step = 1 << 20
            for i in range(0, len(data), step):
                self.wfile.write(data[i:i + step])
                if how == "throttle":
                    time.sleep(0.02)  # keep the download open while another process waits
            with srv.lock:
                srv.full[key] += 1
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(http.server.ThreadingHTTPServer):
    block_on_close = False  # do not wait for a deliberately slow handler on shutdown
    daemon_threads = True


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.root = root
    srv.hub = {}
    srv.requests = collections.Counter()
    srv.full = collections.Counter()
    srv.behaviour = {}
    srv.lock = threading.Lock()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop():
        if thread.is_alive():
            srv.shutdown()
            srv.server_close()
            thread.join()

    srv.stop = stop
    yield srv
    stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Empty senet and Hugging Face caches, and no way to the real Hub."""
    from huggingface_hub import constants

    home = tmp_path / "senet_home"
    monkeypatch.setenv("SENET_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    _endpoint(monkeypatch, "http://127.0.0.1:9")  # the discard port: connection refused
    return home


def _endpoint(monkeypatch, url):
    """Point huggingface_hub at `url` (it reads HF_ENDPOINT once, at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_ENDPOINT", url)


@pytest.fixture
def hub_server(server, home, monkeypatch):
    """The server as the Hugging Face endpoint (in this process and in child processes)."""
    _endpoint(monkeypatch, server.url)
    return server


@pytest.fixture
def no_retry_wait(monkeypatch):
    """huggingface_hub retries a failed connection 5 times over 23 s; tests need not wait."""
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http.time, "sleep", lambda s: None)


# --------------------------------------------------------------------------- CPU per test

_CPU = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """SENET_CPU_PROFILE=DIR records each test's CPU time, its own and its finished child
    processes', and when it started and ended (wall clock), one JSON file per test process
    (`python benchmarks/suite_cpu.py DIR` sums them). The suite is bound by CPU, not by any
    one test's wall time; the times show a process idling at the end."""
    if not os.environ.get("SENET_CPU_PROFILE"):
        yield
        return
    import resource

    start, own = time.time(), time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    _CPU.append([item.nodeid, time.process_time() - own,
                 done.ru_utime + done.ru_stime - kids.ru_utime - kids.ru_stime, start, time.time()])


def pytest_sessionfinish(session):
    directory = os.environ.get("SENET_CPU_PROFILE")
    if directory and _CPU:
        import json

        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"cpu-{backend}-{os.getpid()}.json"), "w") as f:
            json.dump(_CPU, f)


# --------------------------------------------------------------------------- garbage collection

def pytest_collection_finish(session):
    """Everything imported so far (TensorFlow, PyTorch, JAX, timm: millions of objects) lives
    until the end: moved out of the collector's sight, the full collections that model
    building triggers no longer walk it. Measured (`python -m pytest tests/test_models.py
    tests/test_caffe_conversion.py`, one process, gc callbacks timing each collection): the
    full collections 8.6 -> 3.1 CPU-seconds, the run 58.6 -> 48.0."""
    gc.freeze()


def pytest_unconfigure(config):
    """The same at the end: the interpreter's last collection at exit otherwise walks every
    object again (2.6 s to exit after importing timm and keras alone, 0.3 s frozen)."""
    gc.freeze()
