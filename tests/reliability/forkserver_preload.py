"""Imported once, by the fork server of tests/reliability/forked_cli.py: what `llamafoundry train` imports,
and the CPU's fp32 peak, which train/metrics.py measures once per process (1 s on one thread)."""

import threading

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402, F401 - the report's loss curve (1 s)
import torch  # noqa: E402
import torch._dynamo  # noqa: F401 - the optimizer imports it on first use (0.7 s)
from tqdm import tqdm

import llamafoundry.train.trainer  # noqa: F401
from llamafoundry.cli import build_parser
from llamafoundry.train.metrics import peak_flops

torch.set_num_threads(1)  # one thread before the fork: OpenMP threads would hang the children
build_parser()  # imports every command's module
peak_flops(torch.device("cpu"), torch.float32)
# Set before the fork so that no child makes tqdm's default lock, a semaphore shared by every fork: a
# child SIGKILLed while it redraws its bar would hold that for good, and every later child would hang on
# its first bar. Each child's copy of this thread lock is its own (and registers nothing SIGKILL leaks).
tqdm.set_lock(threading.RLock())
