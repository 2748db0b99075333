"""Checksums of data files, and the error every data set reader fails with: :class:`DataError`,
MD5 of a file (each release's files are checked against their published sums), SHA-256 of bytes
and of a file (cached while its stat is unchanged: the ``arrays`` data set's ``data_hash``).
"""

from __future__ import annotations

import hashlib


class DataError(RuntimeError):
    """A data set is missing, incomplete or fails its checksum."""


def md5sum(path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def array_sha256(a) -> str:
    """SHA-256 of an integer array's values (int64, C order, flattened): the same examples (labels,
    indices) in the same order, whatever the file or dtype they came in."""
    import numpy as np

    return sha256_bytes(np.ascontiguousarray(np.asarray(a, dtype=np.int64).ravel()).tobytes())


#: file SHA-256 by (path, inode, size, mtime, ctime); only files unchanged for 2 s are cached
#: (a write within the timestamps' granularity could otherwise hide behind the same stat)
_SHA_CACHE: dict = {}


def file_sha256(path) -> str | None:
    """SHA-256 of a file's bytes (None if it does not exist), cached while the file's stat is
    unchanged: the plan asks for it once per job."""
    import os
    import time

    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
        _SHA_CACHE[key] = digest
    return digest
