"""Batch commands keep freed memory for reuse: a step's large buffers are not page-faulted in again."""

import os
import platform
import subprocess
import sys

import pytest

from llamafoundry.cli import build_parser

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory sets glibc's malloc (it leaves other C libraries alone)",
)

# Steps that each allocate a 256 MB buffer, write it and free it, as a training step does its logits.
# Prints the page faults of the last four. glibc's heap settles within the first eight steps (40 steps in
# each of 32 processes: no fault from the 4th step on, or at the latest the 9th; 1.0 or 2.3 GB held):
# blocks freed between small live ones cannot serve the next request, which PyTorch pads for alignment.
STEPS = """
import resource, sys, torch
{setup}
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
weight = torch.randn(1000, 512)
for step in range(16):
    before = faults()
    hidden = torch.randn(2048, 512)
    logits, small = torch.ones(2**26), hidden @ weight.T
    del logits, small, hidden
    if step >= 12:
        print(faults() - before)
"""
PAGES = 2**28 // 4096  # the buffer's 4 KiB pages


def step_faults(setup: str, env: dict | None = None) -> list[int]:
    code = STEPS.format(setup=setup)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=True
    )
    return [int(line) for line in done.stdout.split()]


def test_kept_memory_serves_the_next_steps_without_page_faults():
    plain = step_faults("")
    kept = step_faults("from llamafoundry.allocator import keep_freed_memory; assert keep_freed_memory()")
    assert max(kept) < PAGES // 100, kept
    assert min(plain) > 10 * max(max(kept), 1), (plain, kept)  # glibc's default maps it afresh each time


def test_commands_that_run_model_steps_keep_freed_memory():
    # The setting is made before the command runs: a missing model still fails as it should.
    kept = step_faults(
        "import contextlib, io\nfrom llamafoundry.cli import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n    assert main(['generate', '/no/model', 'hi']) == 2"
    )
    assert max(kept) < PAGES // 100, kept


def test_a_user_who_set_malloc_keeps_their_setting():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "0"}
    faults = step_faults(
        "from llamafoundry.allocator import keep_freed_memory; assert not keep_freed_memory()", env
    )
    assert min(faults) > PAGES // 2, faults


@pytest.mark.parametrize(
    ("argv", "keeps"),
    [
        (["train", "cfg.toml"], True),
        (["eval", "m"], True),
        (["generate", "m"], True),
        (["quickstart"], True),
        (["finetune", "m"], True),
        (["serve", "m"], False),  # a server lives long, with requests of every shape
        (["data", "run", "r.toml"], False),  # native readers and filters, no model steps
        (["tokenizer", "train", "t.txt", "-o", "tok.model"], False),
    ],
)
def test_which_commands_keep_freed_memory(argv, keeps):
    args, _ = build_parser().parse_known_args(argv)
    assert getattr(args, "keeps_freed_memory", False) is keeps


# Blocks of 1 MiB written and freed, then another of the same size read back: zero if it is fresh.
# (glibc's default maps the first afresh, then raises its threshold and serves the next from the heap.)
THIRD_BLOCK = """
import ctypes
from llamafoundry.allocator import keep_large_blocks_fresh
{setup}
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
for _ in range(2):
    block = libc.malloc(1 << 20)
    ctypes.memset(block, 0x7F, 1 << 20)
    libc.free(block)
print(sum(ctypes.string_at(libc.malloc(1 << 20), 1 << 20)))
"""


def test_large_blocks_kept_fresh_come_zeroed():
    """For native code that reads memory it never wrote (fastText): every large block is new pages."""

    def third_block_sum(setup: str) -> int:
        code = THIRD_BLOCK.format(setup=setup)
        return int(
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        )

    assert third_block_sum("assert keep_large_blocks_fresh()") == 0
    assert third_block_sum("") > 0  # glibc's default reuses the second block's memory
