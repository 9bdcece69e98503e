"""inotify watches that see any read outside the model's folder."""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

# -- inotify (reads outside the model's folder) --------------------------------------------------------

_IN_ACCESS, _IN_OPEN, _IN_ISDIR = 0x1, 0x20, 0x40000000


class Watch:
    """inotify watches on the sandbox's cwd/ and outside/ (and the secret file's inode)."""

    def __init__(self, paths: list[Path]) -> None:
        self.fd = -1
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        for path in paths:
            self._libc.inotify_add_watch(self.fd, str(path).encode(), _IN_OPEN | _IN_ACCESS)

    @property
    def available(self) -> bool:
        return self.fd >= 0

    def events(self) -> list[str]:
        if self.fd < 0:
            return []
        names = []
        try:
            while True:
                data = os.read(self.fd, 1 << 16)
                offset = 0
                while offset + 16 <= len(data):
                    _, mask, _, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode(errors="replace")
                    offset += 16 + length
                    if not mask & _IN_ISDIR:
                        names.append(name or "<watched file>")
        except BlockingIOError:
            pass
        return names

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
