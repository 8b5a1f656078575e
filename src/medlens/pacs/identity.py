"""Pseudonymous patient ids: what medlens writes outside DICOM objects instead of a patient's identity.

A PACS run writes tables, logs and manifests beside the DICOM objects. Those files must not carry the
patient's name, ID or birth date (they are mailed, committed and pasted into tickets), so medlens writes a
**pseudonym** in their place: a keyed hash of the patient ID,

    pseudonym = "P-" + first 16 hex digits of HMAC-SHA256(key, PatientID)

(RFC 2104; 64 bits: no collision is expected below about 10⁹ patients). Without the key the pseudonym
cannot be turned back into the ID or recomputed from a guessed ID; with it, the same ID always gives the
same pseudonym, so results of several runs can be joined, and a person who holds the key can find the
pseudonym of a given patient again:

    medlens pacs pseudonym LIDC-IDRI-0001

The key is ``MEDLENS_PSEUDONYM_KEY`` (any text, taken as UTF-8 bytes) when that variable is set, else the
file ``$XDG_CONFIG_HOME/medlens/pseudonym.key`` (default ``~/.config/medlens``), 32 random bytes created
with permissions 0600 on first use. Keep that file (or the variable) to reproduce the mapping; share it
only with whoever may re-identify. ``--keep-identifiers`` writes the real values instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from medlens.errors import ConfigError

KEY_ENV = "MEDLENS_PSEUDONYM_KEY"
KEY_BYTES = 32
DIGITS = 16
PREFIX = "P-"


def key_file() -> Path:
    """Where the pseudonym key is kept when ``MEDLENS_PSEUDONYM_KEY`` is not set."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "medlens" / "pseudonym.key"


def load_key(create: bool = True) -> bytes:
    """The pseudonym key: ``MEDLENS_PSEUDONYM_KEY``, else :func:`key_file` (created when ``create``)."""
    text = os.environ.get(KEY_ENV)
    if text:
        return text.encode("utf-8")
    path = key_file()
    if path.is_file():
        key = path.read_bytes()
        if len(key) < 16:
            raise ConfigError(f"{path}: pseudonym key shorter than 16 bytes; remove it to create a new one "
                              "(pseudonyms made with the old key will then differ)")
        return key
    if not create:
        raise ConfigError(f"no pseudonym key: set {KEY_ENV} or create {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    return key


def pseudonym(patient_id: str, key: bytes) -> str:
    """``"P-"`` + the first 16 hex digits of HMAC-SHA256(``key``, ``patient_id``); ``""`` for an empty id."""
    if not patient_id:
        return ""
    return PREFIX + hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:DIGITS]


@dataclass
class Identities:
    """How patient identity is written outside DICOM objects: pseudonyms, or the real values when ``keep``."""

    keep: bool = False
    key: bytes | None = None

    def patient(self, patient_id: str) -> str:
        """The patient ID itself when keeping identifiers, else its pseudonym."""
        if self.keep:
            return patient_id
        if self.key is None:
            self.key = load_key()
        return pseudonym(patient_id, self.key)

    def name(self, patient_name: str) -> str:
        """The patient's name when keeping identifiers, else ``""`` (a name is never pseudonymised: the ID is)."""
        return patient_name if self.keep else ""

    def birth_date(self, date: str) -> str:
        """The birth date when keeping identifiers, else ``""``."""
        return date if self.keep else ""
