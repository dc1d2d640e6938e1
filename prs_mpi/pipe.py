"""Pickled messages over a socket between a supervisor and its child: an 8-byte length, then the
pickle. What multiprocessing.connection.Connection does, without the modules it pulls into every
worker rank (multiprocessing, tempfile, shutil, random: ~1 MB of resident memory per rank)."""
from __future__ import annotations

import os
import pickle
import select
import struct
from typing import Any

_LENGTH = struct.Struct("!Q")
_SMALL = 1 << 16            # up to this size the length and the pickle go in one write


class Pipe:
    """One end of a socket pair (blocking); `recv` raises EOFError once the other end closed."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._readable = select.poll()
        self._readable.register(fd, select.POLLIN)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise OSError("the pipe is closed")
        return self._fd

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= _SMALL:
            self._write(_LENGTH.pack(len(data)) + data)
        else:
            self._write(_LENGTH.pack(len(data)))
            self._write(data)

    def recv(self) -> Any:
        (size,) = _LENGTH.unpack(self._read(_LENGTH.size))
        return pickle.loads(self._read(size))

    def poll(self, timeout: float = 0.0) -> bool:
        """True when there is something to read (or the other end closed)."""
        self.fileno()
        return bool(self._readable.poll(timeout * 1000.0))

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fileno(), view):]

    def _read(self, size: int) -> bytes:
        chunks, got = [], 0
        while got < size:
            chunk = os.read(self.fileno(), size - got)
            if not chunk:
                raise EOFError("the other end of the pipe closed")
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
