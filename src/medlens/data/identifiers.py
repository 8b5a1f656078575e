"""Patient identifiers kept out of every output outside DICOM: a keyed pseudonym instead.

DICOM files carry ``PatientID``, ``PatientName`` and ``PatientBirthDate``. medlens reads them (grouping
slices and samples by patient needs the ID) but writes none of them into what it shows or saves outside
DICOM — ``medlens inspect``, prediction tables, reports — unless the user asks with
``--keep-identifiers``. In their place goes a **pseudonym**: the same patient always gets the same one on
one site, so rows can still be grouped and traced back by whoever holds the key, but nobody else can
recover the ID from it.

The pseudonym is a keyed hash (HMAC-SHA-256, RFC 2104) of the PatientID's UTF-8 bytes (leading and trailing
spaces removed, as DICOM pads values), its first 16 hex digits after the prefix ``anon-``::

    pseudonym = "anon-" + HMAC_SHA256(key, patient_id)[:16 hex digits]

A plain hash would not do: patient IDs are short and structured (``LIDC-IDRI-0001``), so anyone could hash
every candidate and look the pseudonym up. The key is read, in this order, from

1. ``MEDLENS_PSEUDONYM_KEY``: the key itself, as text;
2. the file named by ``MEDLENS_PSEUDONYM_KEY_FILE``, else ``$XDG_CONFIG_HOME/medlens/pseudonym.key``
   (``~/.config/medlens/pseudonym.key``): its text, without the final newline. When that default file does
   not exist, medlens creates it once with 32 random bytes in hex, readable by its owner only (0600).

Share the key within a site to get the same pseudonyms on every machine; keep it as secret as the IDs.
To reproduce a pseudonym outside medlens::

    printf %s 'LIDC-IDRI-0001' | openssl dgst -sha256 -hmac "$(cat ~/.config/medlens/pseudonym.key)"
    # or: python -c "import hmac,hashlib,sys; print('anon-' + hmac.new(sys.argv[1].encode(),
    #                sys.argv[2].encode(), hashlib.sha256).hexdigest()[:16])" "$KEY" LIDC-IDRI-0001

and put ``anon-`` before the first 16 hex digits. 64 bits make a collision between two patients of one
site vanishingly unlikely (about n²/2⁶⁵: 3·10⁻⁸ for a million patients).

Every part of medlens that shows patient data (inspect, PACS listings, prediction CSVs, reports) uses
:func:`pseudonym` and :func:`redact_identifiers` from here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, Mapping

from medlens.errors import ConfigError

KEY_ENV = "MEDLENS_PSEUDONYM_KEY"
KEY_FILE_ENV = "MEDLENS_PSEUDONYM_KEY_FILE"
PREFIX = "anon-"
HEX_DIGITS = 16
IDENTIFYING_FIELDS = ("patient_id", "patient_name", "patient_birth_date")
"""The ``MedImage.meta`` keys (DICOM PatientID, PatientName, PatientBirthDate) that are identifiers."""


def default_key_file() -> Path:
    """``$XDG_CONFIG_HOME/medlens/pseudonym.key`` (``~/.config/medlens/pseudonym.key``)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "medlens" / "pseudonym.key"


def pseudonym_key() -> bytes:
    """The site's key (see the module docstring for where it is read from; the default file is created
    on first use)."""
    text = os.environ.get(KEY_ENV)
    if text:
        return text.encode("utf-8")
    named = os.environ.get(KEY_FILE_ENV)
    path = Path(named) if named else default_key_file()
    if not path.exists():
        if named:
            raise ConfigError(f"{KEY_FILE_ENV}={named}: no such key file")
        _create_key_file(path)
    key = path.read_text(encoding="utf-8").rstrip("\r\n")
    if not key:
        raise ConfigError(f"{path}: the pseudonym key file is empty")
    return key.encode("utf-8")


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(secrets.token_hex(32) + "\n")


def pseudonym(identifier: str | None, key: bytes | None = None) -> str | None:
    """``anon-`` and 16 hex digits of HMAC-SHA-256(key, identifier); None for an empty identifier.

    Parameters
    ----------
    identifier : str
        A PatientID (leading and trailing spaces are ignored).
    key : bytes, optional
        Default: :func:`pseudonym_key`.
    """
    value = (identifier or "").strip()
    if not value:
        return None
    digest = hmac.new(key if key is not None else pseudonym_key(), value.encode("utf-8"), hashlib.sha256)
    return PREFIX + digest.hexdigest()[:HEX_DIGITS]


def redact_identifiers(fields: Mapping[str, Any], keep: bool = False) -> dict[str, Any]:
    """A copy of ``fields`` fit to show: without :data:`IDENTIFYING_FIELDS`, with ``patient_pseudonym``
    (from ``patient_id``) instead; ``keep=True`` (``--keep-identifiers``) returns them as they are, with
    empty ones dropped."""
    out = dict(fields)
    if keep:
        return {k: v for k, v in out.items() if not (k in IDENTIFYING_FIELDS and v in (None, ""))}
    patient = out.get("patient_id")
    for name in IDENTIFYING_FIELDS:
        out.pop(name, None)
    alias = pseudonym(patient) if isinstance(patient, str) else None
    if alias is not None:
        out["patient_pseudonym"] = alias
    return out
