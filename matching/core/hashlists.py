"""PDQ hash lists in the formats Meta's Hasher-Matcher-Actioner (HMA) and the ``threatexchange``
library exchange: reading an imported list strictly, writing an exported one (docs/hash-exchange.md).

Formats, one hash per line, 64 lowercase hex digits (``PdqSignal.validate_signal_str``):

- ``pdq``: the bare hash, as HMA's bank export and ``threatexchange``'s file collaboration with
  ``signal_type=pdq`` read it;
- ``te``: ``pdq <hash>``, the line ``threatexchange``'s ``LocalFileSignalExchangeAPI`` reads (and
  ``report_opinion`` appends) when the file names the signal type itself;
- ``csv``: a header row, then ``pdq,quality,image_id,key,collection,label`` (export) or at least a
  ``pdq`` (or ``hash``/``signal``) column, with optional ``quality`` and ``label`` (import).

Plain Python: no Django, no environment (docs/coding-habits.md).
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "EXPORT_FORMATS",
    "ExportRow",
    "HashListError",
    "ParsedEntry",
    "csv_safe",
    "export_text",
    "parse_hash_list",
]

EXPORT_FORMATS = ("te", "pdq", "csv")
CSV_COLUMNS = ("pdq", "quality", "image_id", "key", "collection", "label")

_PDQ = re.compile(r"^[0-9a-fA-F]+$")
_HASH_COLUMNS = ("pdq", "hash", "signal")
# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
LABEL_MAX = 200


class HashListError(ValueError):
    """An imported list that cannot be taken as a whole: the first problem, with its line number."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


@dataclass(frozen=True)
class ParsedEntry:
    pdq: str            # 64 lowercase hex digits
    quality: int | None
    label: str
    line: int


@dataclass(frozen=True)
class ExportRow:
    pdq: str
    quality: int | None
    image_id: int | str
    key: str
    collection: str
    label: str = ""


def _hash(value: str, line: int) -> str:
    value = value.strip()
    if len(value) != 64:
        raise HashListError(f"a PDQ hash has 64 hex digits, this one has {len(value)}: {value[:80]!r}", line=line)
    if not _PDQ.match(value):
        raise HashListError(f"not a hexadecimal PDQ hash: {value[:80]!r}", line=line)
    return value.lower()


def _label(value: str, line: int) -> str:
    value = value.strip()
    if len(value) > LABEL_MAX:
        raise HashListError(f"a label has at most {LABEL_MAX} characters", line=line)
    if _CONTROL.search(value):
        raise HashListError("a label must be one line without control characters", line=line)
    if value.startswith(_FORMULA_START):
        raise HashListError(f"a label may not start with {value[0]!r} (a spreadsheet would run it as a formula)",
                            line=line)
    return value


def _quality(value: str, line: int) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > 100:
        raise HashListError(f"a PDQ quality is a whole number from 0 to 100, not {value[:20]!r}", line=line)
    return int(value)


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HashListError(f"the file is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise HashListError("the file is not text (it holds NUL bytes)")
    return text


def parse_hash_list(data: bytes, *, max_entries: int) -> list[ParsedEntry]:
    """Every entry of a PDQ list (plain, ``pdq <hash>`` or CSV with a header), or ``HashListError``
    at the first bad line: a list is taken whole or not at all. Blank lines and ``#`` comments are
    skipped; a hash listed twice is kept once (its first label)."""
    text = _text(data)
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    entries = _parse_csv(text) if "," in first else _parse_lines(lines)
    if not entries:
        raise HashListError("the file holds no PDQ hash")
    if len(entries) > max_entries:
        raise HashListError(f"the list holds {len(entries)} hashes; at most {max_entries} are taken at once")
    seen: set[str] = set()
    unique = []
    for e in entries:
        if e.pdq not in seen:
            seen.add(e.pdq)
            unique.append(e)
    return unique


def _parse_lines(lines: Sequence[str]) -> list[ParsedEntry]:
    out = []
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        if rest:  # "<signal type> <hash>", threatexchange's file format
            if kind.lower() != "pdq":
                raise HashListError(f"only PDQ hashes are taken, not {kind[:40]!r}", line=n)
            line = rest
        out.append(ParsedEntry(_hash(line, n), None, "", n))
    return out


def _parse_csv(text: str) -> list[ParsedEntry]:
    rows = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    out = []
    try:
        for row in rows:
            n = rows.line_num
            if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                if not any(c in header for c in _HASH_COLUMNS):
                    raise HashListError("the CSV header names no 'pdq' column", line=n)
                continue
            if len(row) > len(header):
                raise HashListError(f"{len(row)} cells but the header names {len(header)}", line=n)
            cells = dict(zip(header, row))
            value = next(cells[c] for c in _HASH_COLUMNS if c in cells)
            out.append(ParsedEntry(_hash(value, n), _quality(cells.get("quality", ""), n),
                                   _label(cells.get("label", ""), n), n))
    except csv.Error as exc:
        raise HashListError(f"unreadable CSV: {exc}", line=rows.line_num) from None
    return out


def csv_safe(value: str) -> str:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_text(rows: Iterable[ExportRow], fmt: str) -> Iterable[str]:
    """The lines of an export, each ending in a newline (streamed: a collection may be large)."""
    if fmt == "pdq":
        return (f"{r.pdq}\n" for r in rows)
    if fmt == "te":
        return (f"pdq {r.pdq}\n" for r in rows)
    if fmt == "csv":
        return _csv_lines(rows)
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}")


def _csv_lines(rows: Iterable[ExportRow]) -> Iterable[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for r in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([r.pdq, "" if r.quality is None else r.quality, r.image_id, csv_safe(r.key),
                         csv_safe(r.collection), csv_safe(r.label)])
        yield buffer.getvalue()
