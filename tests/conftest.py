"""Shared fixtures. The Keras backend is chosen by KERAS_BACKEND before anything imports keras."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import collections  # noqa: E402
import http.server  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

# torchvision's CUDA build (pulled in by timm) segfaults when imported after TensorFlow;
# imported first, both work. timm is a test-only reference, so import it up front.
try:
    import timm  # noqa: F401
except ImportError:
    pass


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
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

class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files from server.root; server.behaviour[name] changes how one is sent."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        name = self.path.split("?", 1)[0].lstrip("/")
        with srv.lock:
            srv.requests[name] += 1
        if name.startswith("redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + name[len("redirect/"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = srv.root / name
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        how = srv.behaviour.get(name)
        if how == "slow":
            time.sleep(1.5)  # longer than the test's hub.TIMEOUT
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if how != "no-length":
            self.send_header("Content-Length", str(len(data)))
        else:
            self.close_connection = True
        self.end_headers()
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
                    time.sleep(0.02)  # keep the download open while a 2nd process waits
            with srv.lock:
                srv.full[name] += 1
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(http.server.ThreadingHTTPServer):
    block_on_close = False  # do not wait for a deliberately slow handler on shutdown


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.root = root
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
    home = tmp_path / "senet_home"
    monkeypatch.setenv("SENET_HOME", str(home))
    monkeypatch.delenv("SENET_WEIGHTS_MIRROR", raising=False)
    return home
