"""Reader for the IDX format of MNIST and Fashion-MNIST, gzip-compressed or plain.

Format (Y. LeCun, http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"):

- magic number, 4 bytes: ``0x00 0x00``, a type code, the number of dimensions ``ndim``;
- ``ndim`` dimension sizes, each a big-endian unsigned 32-bit integer;
- the data, C order, big-endian.

Type codes: ``0x08`` unsigned byte, ``0x09`` signed byte, ``0x0B`` short (2 bytes),
``0x0C`` int (4 bytes), ``0x0D`` float (4 bytes), ``0x0E`` double (8 bytes).

Compression is detected from the gzip magic bytes (``1f 8b``), not from the file name.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

__all__ = ["read_idx", "IDX_DTYPES"]

IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip or plain) into a numpy array in native byte order.

    Args:
        path: file path (``str`` or ``os.PathLike``).

    Returns:
        array of shape given by the header, dtype ``uint8``, ``int8``, ``int16``, ``int32``,
        ``float32`` or ``float64`` according to the type code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the header is not IDX (bad magic, unknown type code) or the payload size does
            not match the dimensions; the message names the file and what was found.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise ValueError(f"{path}: cannot decompress gzip IDX file ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic starts {raw[:4].hex()}, expected 0000xxyy)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: header declares {ndim} dimensions but the file has only {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        raise ValueError(
            f"{path}: IDX dimensions {dims} of {dtype.itemsize}-byte items need {expected} data bytes, found {payload}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))
