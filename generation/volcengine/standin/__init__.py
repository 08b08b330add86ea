"""A local stand-in for VolcEngine's visual API, for tests and demos without network to VolcEngine.

It speaks the two actions Easel uses (``CVSync2AsyncSubmitTask``, ``CVSync2AsyncGetResult``) over the same HTTP the
official ``volcengine`` SDK sends, checks the SDK's request signature against a configured key pair, and draws a
placeholder picture labelled "VolcEngine stand-in". Nothing it draws is AI output. See README.md beside it.
"""

from .options import Faults, StandinOptions
from .server import create_app, main

__all__ = ["Faults", "StandinOptions", "create_app", "main"]
