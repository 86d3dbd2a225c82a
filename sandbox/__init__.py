"""Faithful local emulators of the video providers' HTTP contracts, with fault injection.

Used by the demo, the tests and the benchmarks: ``Sandbox`` runs them in-process,
``python -m sandbox`` (or :func:`main`) in the foreground. See :mod:`sandbox.server`.
"""

from .cli import main
from .media import make_invalid_file, make_video_file
from .server import Sandbox

__all__ = ["Sandbox", "main", "make_invalid_file", "make_video_file"]
