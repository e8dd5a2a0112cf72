"""Extractors that misbehave on purpose, run inside sandbox workers by test_sandbox.py.

The file name says what to do, so one worker can be sent a good document after a bad one.
"""

from __future__ import annotations

import ctypes
import os
import time

from docpipe_dagster.core.extract.base import ExtractedPage, ExtractionError


def misbehave(filename: str, data: bytes) -> list[ExtractedPage]:
    action = filename.rsplit(".", 1)[0]
    if action == "echo":
        return [ExtractedPage(text=data.decode(), md=f"# {data.decode()}")]
    if action == "env":
        return [ExtractedPage(text=" ".join(sorted(os.environ)), md="")]
    if action == "pid":
        return [ExtractedPage(text=str(os.getpid()), md=str(os.getpid()))]
    if action == "print":  # a library writing to stdout must not corrupt the protocol
        print("noise on stdout " * 1000)
        os.write(1, b"raw noise on fd 1\n")
        return [ExtractedPage(text="printed", md="printed")]
    if action == "refuse":
        raise ExtractionError("CORRUPTED_FILE", "refused on purpose")
    if action == "allocate":  # a decompression bomb in Python: MemoryError
        blocks = []
        while True:
            blocks.append(bytearray(256 * 1024 * 1024))
    if action == "touch":  # a bomb in C code that touches what it maps: dies or MemoryError
        size = 64 * 1024 * 1024
        blocks = []
        while True:
            buf = ctypes.create_string_buffer(size)
            ctypes.memset(buf, 1, size)
            blocks.append(buf)
    if action == "segfault":
        ctypes.string_at(0)
    if action == "spin":  # a parser in a loop: the CPU limit kills it
        while True:
            pass
    if action == "sleep":  # blocked, no CPU used: the wall-clock timeout kills it
        time.sleep(3600)
    if action == "raise":
        raise KeyError("an extractor bug")
    if action == "surrogate":
        return [ExtractedPage(text="broken \udcff text", md="broken \udcff text")]
    raise AssertionError(f"unknown action {action}")
