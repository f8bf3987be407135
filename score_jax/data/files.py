"""Reading the user's dataset files: JSON readers, checksum checks, and `DataError`.

The datasets this project trains and evaluates on are downloaded by the user (their licenses and
hosts are listed in third_party/DATASETS.md). Every reader here raises `DataError` naming the file
and, for JSON Lines, the line, so a wrong or truncated download is fixed without a debugger.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import json
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

# Known-good sha256 digests of official files. It lives at the repository root, reviewed with the
# licenses beside it; a non-editable install of the package lacks it and skips the check.
CHECKSUMS_PATH = pathlib.Path(__file__).resolve().parents[2] / "third_party" / "dataset_checksums.tsv"


class DataError(Exception):
    """A dataset file the user supplies is missing or malformed."""


def find_file(folder: pathlib.Path, candidates: Sequence[str], *, what: str, instructions: str) -> pathlib.Path:
    """Returns the first of `candidates` (paths relative to `folder`) that is a file.

    Raises:
      DataError: none is; the message lists every path tried and the download instructions.
    """
    for name in candidates:
        path = folder / name
        if path.is_file():
            return path
    tried = "\n".join(f"  {folder / name}" for name in candidates)
    raise DataError(f"No {what} found. Expected one of:\n{tried}\n{instructions}")


def read_text(path: pathlib.Path) -> str:
    """The text of `path`, gunzipped when its name ends in `.gz`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError(f"Missing file {path}.") from e
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"Cannot read {path} as UTF-8 text: {e}") from e


def read_jsonl(path: pathlib.Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, object) for each non-blank line of a JSON Lines file."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number} is not valid JSON ({e.msg}); expected one JSON object per line.") from e
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number} holds a {type(record).__name__}; expected a JSON object.")
        yield number, record


def read_json(path: pathlib.Path) -> Any:
    """The parsed content of a JSON file."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}).") from e


def require_fields(record: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]], where: str) -> None:
    """Checks that `record` has each of `fields` with the given type.

    Args:
      record: one parsed example.
      fields: field name -> accepted type(s).
      where: the file (and line) the record came from, for the message.

    Raises:
      DataError: a field is absent or of another type.
    """
    for name, kind in fields.items():
        if name not in record:
            raise DataError(f"{where}: missing field {name!r} (fields present: {sorted(record)}).")
        value = record[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            expected = " or ".join(k.__name__ for k in kinds)
            raise DataError(f"{where}: field {name!r} is {value!r}, expected {expected}.")


def content_sha256(path: pathlib.Path) -> str:
    """sha256 of the file's content, after gunzip for `.gz` files (gzip headers hold a date)."""
    opener = gzip.open if path.suffix == ".gz" else open
    digest = hashlib.sha256()
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def known_checksums() -> dict[tuple[str, str], str]:
    """(dataset, role) -> sha256 from third_party/dataset_checksums.tsv; empty if it is absent."""
    if not CHECKSUMS_PATH.is_file():
        logging.info("No checksum manifest at %s; dataset files are not verified.", CHECKSUMS_PATH)
        return {}
    with CHECKSUMS_PATH.open(encoding="utf-8") as f:
        rows = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
        return {(row["dataset"], row["role"]): row["sha256"] for row in rows}


def check_checksum(dataset: str, role: str, path: pathlib.Path) -> bool:
    """Compares `path` with the official file's digest; logs a warning on a mismatch.

    A mismatch is not an error: re-exported copies of these datasets (other JSON layouts, fixed
    typos) are common and valid, but results on them may differ from published numbers.

    Returns:
      True when the manifest knows this (dataset, role) and the digest matches.
    """
    expected = known_checksums().get((dataset, role))
    if expected is None:
        return False
    actual = content_sha256(path)
    if actual != expected:
        logging.warning(
            "%s differs from the known %s %s file (sha256 %s, expected %s; see %s).",
            path,
            dataset,
            role,
            actual,
            expected,
            CHECKSUMS_PATH,
        )
    return actual == expected


def manual_folder(dl_manager: Any) -> pathlib.Path:
    """The folder of user-supplied files a TFDS download manager was given.

    Raises:
      DataError: the folder is missing or empty; the message names it and gives the builder's
        download instructions.
    """
    try:
        return pathlib.Path(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS asserts that the folder exists and is not empty.
        raise DataError(str(e)) from e


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder over files the user downloads (version 1.0.0 of every score_jax dataset)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
