"""Read files in a child process, so that one file that hangs, recurses or eats memory fails alone.

The trade-off: loading and splitting run in one reusable child process per run, not one per file, so a
run pays for one interpreter start (under a second) and each file for a round trip of its chunks through a
pipe. The child is a fresh `python -c` with the parent's `sys.path`, talking over its stdin and stdout:
unlike a multiprocessing "fork" it is safe to start from the app's threads, and unlike "spawn" it never
re-runs the caller's main script (a script without an `if __name__ == "__main__":` guard would start
ingesting again in every child). A file that runs past its time budget gets its child killed and replaced,
and is reported; a memory cap (RLIMIT_AS, where the system has one) turns a memory bomb into that file's
MemoryError instead of the machine's. POSIX only, like the pipes it polls.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.core.errors import LoadError
from ingest.loaders import load_file
from ingest.split import ChunkerSettings, TokenCounter, split_documents

if TYPE_CHECKING:
    from langchain_core.documents import Document

FILE_TIMEOUT_S = 60.0  # a 50 MB PDF takes pypdf tens of seconds; nothing a person wrote needs more
FILE_MEMORY_BYTES = 4 * 1024**3
# The child: its stdout becomes the reply pipe, and fd 1 is pointed at stderr so a stray print cannot corrupt it.
_BOOT = "import sys; sys.path[:0] = sys.argv[1:]; from ingest.worker import _child_main; _child_main()"


@dataclass(frozen=True)
class ReadLimits:
    """What one file may cost to read and split: seconds of wall time, bytes of address space (None: no cap)."""

    seconds: float = FILE_TIMEOUT_S
    memory_bytes: int | None = FILE_MEMORY_BYTES


class FileReader:
    """Load and split files one at a time in a child process; `read` returns a file's chunks or raises LoadError."""

    def __init__(self, count_tokens: TokenCounter, chunker: ChunkerSettings, limits: ReadLimits | None = None) -> None:
        self.limits = limits or ReadLimits()
        self.chunker = chunker
        self.count_tokens = count_tokens
        # A counter that cannot travel to the child (a closure, say) splits here instead: loading, where the
        # hostile formats are, is still isolated.
        self.split_here = not _picklable(count_tokens)
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, path: Path, source: str) -> list[Document]:
        """The chunks of one file, or LoadError saying why it cannot be read (too slow, too big, broken)."""
        requests, replies = self._start()
        requests.send((path, source))
        if not replies.poll(self.limits.seconds):
            self.close()
            raise LoadError(
                f"took longer than {self.limits.seconds:g} s to read and split, so it was stopped; "
                "simplify or split the file, or raise the limit with --file-timeout"
            )
        try:
            status, value = replies.recv()
        except (EOFError, OSError) as error:
            code = self._stop()
            raise LoadError(
                f"the process reading it stopped (exit code {code}), most likely out of memory; "
                "simplify or split the file"
            ) from error
        if status == "failed":
            raise LoadError(value)
        if self.split_here:
            try:
                return split_documents(value, self.count_tokens, self.chunker)
            except Exception as error:  # same rule as in the child: this file fails, the run goes on
                raise LoadError(_unexpected(error)) from error
        return value

    def close(self) -> None:
        """Stop the child (it may be busy with a file that overran, so it is killed, not asked)."""
        if self._process is not None:
            self._process.kill()
        self._stop()

    def _stop(self) -> int | None:
        code = None
        if self._process is not None:
            code = self._process.wait()
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()
        self._process, self._requests, self._replies = None, None, None
        return code

    def _start(self) -> tuple[Connection, Connection]:
        if self._process is not None and self._requests is not None and self._replies is not None:
            return self._requests, self._replies
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, *sys.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._process = process
        self._requests = Connection(os.dup(process.stdin.fileno()), readable=False)
        self._replies = Connection(os.dup(process.stdout.fileno()), writable=False)
        process.stdin.close()
        process.stdout.close()
        counter = None if self.split_here else self.count_tokens
        try:
            self._requests.send((counter, self.chunker, self.limits.memory_bytes))
            self._replies.recv()  # "ready": the child's imports do not count against the first file's time
        except (EOFError, OSError) as error:
            code = self._stop()
            raise LoadError(f"the process that reads files could not start (exit code {code})") from error
        return self._requests, self._replies


def _child_main() -> None:
    """The child's entry point: set up its two pipes, then serve requests."""
    requests = Connection(os.dup(0), writable=False)
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    try:
        count_tokens, chunker, memory = requests.recv()
    except (EOFError, KeyboardInterrupt):
        return
    _serve(requests, replies, count_tokens, chunker, memory)


def _serve(
    requests: Connection,
    replies: Connection,
    count_tokens: TokenCounter | None,
    chunker: ChunkerSettings,
    memory: int | None,
) -> None:
    """Read (path, source) requests until the pipe closes, answer ("ok", chunks) or ("failed", why)."""
    _cap_memory(memory)
    try:
        replies.send(("ready", None))
        while True:
            try:
                path, source = requests.recv()
            except EOFError:
                return
            replies.send(_read_one(path, source, count_tokens, chunker, memory))
    except KeyboardInterrupt:
        return  # Ctrl-C reaches the whole process group; the parent reports it


def _read_one(
    path: Path, source: str, count_tokens: TokenCounter | None, chunker: ChunkerSettings, memory: int | None
) -> tuple[str, Any]:
    try:
        documents = load_file(path, source)
        return ("ok", documents if count_tokens is None else split_documents(documents, count_tokens, chunker))
    except LoadError as error:
        return ("failed", str(error))
    except MemoryError:
        limit = f"more than {memory / 1024**3:g} GB of" if memory else "more"
        return ("failed", f"needed {limit} memory to read; simplify or split the file")
    except RecursionError:
        return ("failed", "nested too deeply to read; flatten it")
    except Exception as error:  # any other failure inside a parser is this file's, not the run's
        return ("failed", _unexpected(error))


def _unexpected(error: Exception) -> str:
    return f"could not be read ({type(error).__name__}: {error}); re-save or simplify the file"


def _cap_memory(memory: int | None) -> None:
    try:
        import resource  # POSIX only
    except ImportError:
        return
    if memory is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or memory < hard:
        resource.setrlimit(resource.RLIMIT_AS, (memory, hard))


def _picklable(value: object) -> bool:
    try:
        pickle.dumps(value)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


__all__ = ["FILE_MEMORY_BYTES", "FILE_TIMEOUT_S", "FileReader", "ReadLimits"]
