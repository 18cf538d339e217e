"""Test doubles loaded into sweep workers with --plugin: kernels that crash or hang."""

import ctypes
import os
import signal
import time

from harness.kernels import register
from harness.kernels.direct import DirectSparseConv


@register
class SegfaultConv(DirectSparseConv):
    """Dereferences a null pointer on the layer named in $FAULTY_LAYER (every layer if unset)."""

    method = "segfault"

    def _run(self, x, out):
        if os.environ.get("FAULTY_LAYER") in (None, str(self.spec.in_channels)):
            ctypes.string_at(0)
        super()._run(x, out)


@register
class IllegalInstructionConv(DirectSparseConv):
    method = "sigill"

    def _run(self, x, out):
        os.kill(os.getpid(), signal.SIGILL)


@register
class HangConv(DirectSparseConv):
    method = "hang"

    def _run(self, x, out):
        time.sleep(3600)
