"""Strict, fast-enough CSV reading for the dataset loaders (numpy + the ``csv`` module only).

``read_columns`` reads only the named columns of a headed CSV file, in chunks of rows, and
converts each chunk to numpy arrays at once (numpy parses the strings), so a 12.5M-row file
needs a few GiB of memory at most and about a minute. Every problem raises ``DataFormatError``
naming the file, the line (1 = the header) and the column:

- a required column missing from the header, or an empty file;
- a row whose number of fields differs from the header's;
- a value that is not a number in an ``int`` column (empty not allowed) or a ``float`` column
  (empty allowed: read as NaN).

Line numbers count physical lines, blank lines and quoted multi-line fields included (an error
rescans the file to find the line, so the happy path pays nothing for it). A missing file raises
``MissingFileError`` (a ``DataFormatError`` and a ``FileNotFoundError``) naming the file expected
and the directory it was looked for in.
"""

from __future__ import annotations

import csv
import glob
import os
from operator import itemgetter

import numpy as np

from purerec.core.errors import PurerecError

KINDS = ("int", "float", "str")
CHUNK_ROWS = 1 << 20


class DataFormatError(PurerecError, ValueError):
    """A data file is missing or malformed; the message names the file, line and column."""


class MissingFileError(DataFormatError, FileNotFoundError):
    """A required data file is not where it was looked for."""


def require_file(data_dir: str, name: str, dataset: str = "") -> str:
    """Path of ``data_dir/name``; ``MissingFileError`` naming both when it is not a file."""
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
        what = f"the {dataset} file " if dataset else "file "
        raise MissingFileError(f"{what}'{name}' was not found in directory '{os.path.abspath(data_dir)}' "
                               f"(looked for '{os.path.abspath(path)}')")
    return path


def require_glob(data_dir: str, pattern: str, dataset: str = "") -> list[str]:
    """Sorted files matching ``data_dir/pattern``; ``MissingFileError`` when there are none."""
    paths = sorted(p for p in glob.glob(os.path.join(glob.escape(data_dir), pattern)) if os.path.isfile(p))
    if not paths:
        what = f"{dataset} files" if dataset else "files"
        raise MissingFileError(f"no {what} matching '{pattern}' were found in directory "
                               f"'{os.path.abspath(data_dir)}'")
    return paths


def check_text(path: str) -> None:
    """``DataFormatError`` naming the file when it is compressed or binary, not a UTF-8 CSV."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:2] == b"\x1f\x8b":
        raise DataFormatError(f"{path}: the file is gzip-compressed; decompress it (gunzip) and point "
                              f"world.data_dir at the .csv")
    if head[:4] == b"PK\x03\x04":
        raise DataFormatError(f"{path}: the file is a zip archive; extract the .csv files into world.data_dir")
    if b"\x00" in head:
        raise DataFormatError(f"{path}: the file is binary (NUL bytes in its first 4 KiB); expected a UTF-8 CSV")


def _decode_error(path: str, e: UnicodeDecodeError) -> DataFormatError:
    return DataFormatError(f"{path}: not UTF-8 text at byte {e.start} ({e.reason}); expected a UTF-8 CSV file "
                           f"(re-save it as UTF-8)")


def line_of_record(path: str, record: int) -> int:
    """Physical line (1-based) on which data record ``record`` (0-based, blank lines skipped) starts."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        start = reader.line_num + 1
        k = 0
        for row in reader:
            if row:
                if k == record:
                    return start
                k += 1
            start = reader.line_num + 1
    return start


def _header(path: str, reader) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise DataFormatError(f"{path}: line 1: the file is empty; expected a CSV header") from None
    header = [h.strip() for h in header]
    if header:
        header[0] = header[0].lstrip("\ufeff")
    return header


def _convert(path: str, name: str, kind: str, values: list, first_record: int) -> np.ndarray:
    """One chunk of one column as a numpy array; on failure find the first bad value."""
    if kind == "str":
        return np.asarray(values, dtype=object)
    dtype = np.int64 if kind == "int" else np.float64
    try:
        return np.asarray(values, dtype=dtype)
    except (ValueError, OverflowError):
        pass
    out = np.empty(len(values), dtype=dtype)
    for k, v in enumerate(values):
        try:
            out[k] = float("nan") if (kind == "float" and not v.strip()) else (int(v) if kind == "int" else float(v))
        except (ValueError, OverflowError):
            line = line_of_record(path, first_record + k)
            expected = "an integer" if kind == "int" else "a number (or an empty field)"
            raise DataFormatError(f"{path}: line {line}, column '{name}': expected {expected}, "
                                  f"got {v!r}") from None
    return out


def read_header(path: str) -> list[str]:
    """The header row of a CSV file (names stripped, BOM removed); ``DataFormatError`` when the
    file is empty, compressed, binary or not UTF-8."""
    check_text(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return _header(path, csv.reader(fh))
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None


def read_columns(path: str, columns: dict[str, str], chunk_rows: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
    """Read the named columns of a headed CSV file.

    ``columns`` maps a column name to its kind: ``"int"`` (int64; empty is an error), ``"float"``
    (float64; empty -> NaN) or ``"str"`` (object array of the raw strings). Other columns of the
    file are not read. Blank lines are skipped.
    """
    for name, kind in columns.items():
        if kind not in KINDS:
            raise ValueError(f"column '{name}': kind {kind!r} is not one of {KINDS}")
    names = list(columns)
    check_text(path)
    try:
        return _read_columns(path, columns, names, chunk_rows)
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None


def _read_columns(path: str, columns: dict[str, str], names: list[str], chunk_rows: int) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = _header(path, reader)
        missing = [c for c in names if c not in header]
        if missing:
            raise DataFormatError(f"{path}: line 1 (header): missing required column(s) {missing}; "
                                  f"the header has {header}")
        n_fields = len(header)
        idx = [header.index(c) for c in names]
        pick = itemgetter(*idx) if len(idx) > 1 else (lambda row, i=idx[0]: (row[i],))
        parts: dict[str, list[np.ndarray]] = {c: [] for c in names}
        n_records = 0
        while True:
            rows = []
            for row in reader:
                if len(row) != n_fields:
                    if not row:
                        continue
                    raise DataFormatError(f"{path}: line {reader.line_num}: expected {n_fields} fields "
                                          f"as in the header, got {len(row)}")
                rows.append(pick(row))
                if len(rows) == chunk_rows:
                    break
            if not rows:
                break
            for k, name in enumerate(names):
                values = [row[k] for row in rows]
                parts[name].append(_convert(path, name, columns[name], values, n_records))
            n_records += len(rows)
            if len(rows) < chunk_rows:
                break
    out = {}
    for name in names:
        kind = columns[name]
        empty = np.empty(0, dtype=object if kind == "str" else (np.int64 if kind == "int" else np.float64))
        out[name] = np.concatenate(parts[name]) if parts[name] else empty
    return out
