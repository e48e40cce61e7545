"""The `senet` command: thin subcommands over the library.

User errors (`senet.errors.SenetError`: bad files, bad arguments, no network) end with one
line on stderr and exit code 1; anything else keeps its traceback, because it is a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from senet.errors import ArgumentError as UserError  # noqa: F401 - the commands' bad options
from senet.errors import MissingDependencyError, SenetError, one_line

# name -> (module, one-line help); each module has add_arguments(parser) and run(args).
COMMANDS = {
    "convert": ("senet.cli.convert", "convert published weights (Caffe, PyTorch, TF1) to a senet weights file"),
    "list": ("senet.cli.listing", "list the models, their size and the accuracy of their weights"),
    "predict": ("senet.cli.predict", "the top ImageNet classes of image files"),
    "evaluate": ("senet.cli.evaluate", "top-1/top-5 accuracy on an ImageNet-style validation folder"),
    "export": ("senet.cli.export", "export a model to SavedModel, ONNX or TFLite, checked by running it"),
    "train": ("senet.cli.train", "train a model on a folder of images, or fine-tune pretrained weights"),
    "benchmark": ("senet.cli.benchmark", "measure inference speed (images/s, latency, GFLOP/s), beside timm's"),
}


@contextlib.contextmanager
def _quiet_fd2():
    """Silence what C++ libraries write to fd 2 (TensorFlow's start-up lines) while Keras
    loads; Python exceptions still surface, after the stream is back."""
    if "keras" in sys.modules:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_keras_quietly():
    """Import Keras (and let TensorFlow find its devices) without its start-up chatter."""
    if "keras" in sys.modules:
        return
    with _quiet_fd2():
        try:
            import keras
        except ModuleNotFoundError as err:
            backend = os.environ.get("KERAS_BACKEND", "tensorflow")
            raise MissingDependencyError(
                f"Keras cannot start: {err} (KERAS_BACKEND={backend}). Install the backend: "
                f"pip install 'senet[{backend}]'") from None
        if keras.backend.backend() == "tensorflow":  # device discovery logs too (no GPU, ...)
            import tensorflow as tf

            tf.config.list_physical_devices()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="senet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen command's module is imported: a command that needs Keras (train) must
    # not slow down, or print TensorFlow's start-up lines into, every other one.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == chosen:
            with _quiet_fd2():  # a command module may import Keras to describe its options
                importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "needs_keras", True):
            import_keras_quietly()
        return importlib.import_module(args._module).run(args) or 0
    except SenetError as err:
        print(f"senet {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"senet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `senet list | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 141


if __name__ == "__main__":
    sys.exit(main())
