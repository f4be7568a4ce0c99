"""The metrics of a server's worker processes, kept in one directory and summed at a scrape.

Each worker writes its figures to a file of its own, memory-mapped and updated in place (a
store into shared memory: no lock, no system call on the request path), and holds an
exclusive flock on it while it lives. A scrape, answered by any worker, reads every file of
the directory: counters and histograms are summed over all of them, the dead workers' too,
so a counter never goes backwards while the server lives; a gauge (calls in flight) only
over the files whose lock is still held, since a dead worker's calls are not in flight.

File layout: an 8-byte header (bytes used), then records appended and never moved:
key length (4 bytes), kind ("i" a 64-bit integer, "f" a double), padding, the key (JSON,
padded to 8 bytes), the 8-byte value. A record is written before the header counts it, so
a reader sees whole records only.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

# (metric name, labels, part): part is PLAIN for a counter or gauge, SUM for a histogram's
# sum, and a bucket's index for one of its buckets.
Labels = tuple[tuple[str, str], ...]
Cell = tuple[str, Labels, int]
PLAIN = -1
SUM = -2

SUFFIX = ".metrics"
_HEADER = struct.Struct("<Q")
_RECORD = struct.Struct("<Ic3x")
_KINDS = {b"i": struct.Struct("<q"), b"f": struct.Struct("<d")}
_INITIAL_SIZE = 64 * 1024


def _padded(length: int) -> int:
    return (length + 7) & ~7


class WorkerFile:
    """This process's figures, in a new file of the directory, locked until it exits."""

    def __init__(self, directory: str) -> None:
        folder = Path(directory)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / f"worker-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        import fcntl  # here, not above: on a platform without it, one process still runs

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        # The kernel drops the lock when the process ends, however it ends: that is how a
        # scrape tells a live worker's gauges from a dead one's.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._size = _INITIAL_SIZE
        os.ftruncate(self._fd, self._size)
        self._map = mmap.mmap(self._fd, self._size)
        self._used = _HEADER.size
        _HEADER.pack_into(self._map, 0, self._used)
        self._slots: dict[Cell, tuple[Callable[..., None], int]] = {}

    def set(self, cell: Cell, value: float) -> None:
        """Write a cell's value (an int, or a float for a histogram's sum)."""
        slot = self._slots.get(cell)
        if slot is None:
            slot = self._slots[cell] = self._append(cell, value)
        pack, offset = slot
        pack(self._map, offset, value)

    def _append(self, cell: Cell, value: float) -> tuple[Callable[..., None], int]:
        name, labels, part = cell
        key = json.dumps([name, [list(pair) for pair in labels], part]).encode()
        kind = b"f" if part == SUM else b"i"
        start = self._used
        offset = start + _RECORD.size + _padded(len(key))
        end = offset + 8
        if end > self._size:
            self._grow(end)
        _RECORD.pack_into(self._map, start, len(key), kind)
        self._map[start + _RECORD.size : start + _RECORD.size + len(key)] = key
        pack = _KINDS[kind].pack_into
        pack(self._map, offset, value)
        self._used = end
        _HEADER.pack_into(self._map, 0, end)  # last: the record is whole before it counts
        return pack, offset

    def _grow(self, needed: int) -> None:
        while self._size < needed:
            self._size *= 2
        os.ftruncate(self._fd, self._size)
        self._map.close()
        self._map = mmap.mmap(self._fd, self._size)

    def close(self) -> None:
        """Stop writing; the file stays, so the counts it holds still add up at scrapes."""
        self._map.close()
        os.close(self._fd)  # and with it, the lock


class Directory:
    """Reads every worker's file; remembers the keys it has parsed, so a scrape parses
    only the records added since the last."""

    def __init__(self, directory: str) -> None:
        self.folder = Path(directory)
        self._known: dict[Path, list[tuple[int, struct.Struct, Cell]]] = {}

    def cells(self) -> Iterator[tuple[Cell, float, bool]]:
        """Each cell of each file: its value, and whether the file's worker is alive."""
        paths = sorted(self.folder.glob(f"*{SUFFIX}"))
        for gone in set(self._known) - set(paths):
            del self._known[gone]
        for path in paths:
            try:
                alive, data = _read(path)
            except FileNotFoundError:
                continue
            records = self._known.setdefault(path, [])
            _parse_new(data, records)
            for offset, kind, cell in records:
                yield cell, kind.unpack_from(data, offset)[0], alive


def _read(path: Path) -> tuple[bool, bytes]:
    import fcntl

    with path.open("rb") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            alive = True
        else:
            alive = False  # nobody holds it: its worker has exited (closing drops ours)
        return alive, file.read()


def _parse_new(data: bytes, records: list[tuple[int, struct.Struct, Cell]]) -> None:
    if len(data) < _HEADER.size:
        return  # a file its worker has only just created
    used = min(_HEADER.unpack_from(data, 0)[0], len(data))
    start = records[-1][0] + 8 if records else _HEADER.size
    while start + _RECORD.size <= used:
        length, kind = _RECORD.unpack_from(data, start)
        key_at = start + _RECORD.size
        offset = key_at + _padded(length)
        if kind not in _KINDS or offset + 8 > used:
            return
        name, labels, part = json.loads(data[key_at : key_at + length])
        cell: Cell = (name, tuple((k, v) for k, v in labels), part)
        records.append((offset, _KINDS[kind], cell))
        start = offset + 8


def clear(directory: str) -> None:
    """Remove the worker files a previous server left: done once, before workers start."""
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in folder.glob(f"*{SUFFIX}"):
        path.unlink(missing_ok=True)
