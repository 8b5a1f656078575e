"""Pseudonyms: keyed, stable, not the ID; the key file is private."""

from __future__ import annotations

import hashlib
import hmac
import stat

from medlens.pacs.identity import Identities, key_file, load_key, pseudonym


def test_pseudonym_is_the_documented_keyed_hash():
    expected = "P-" + hmac.new(b"key", b"LIDC-IDRI-0001", hashlib.sha256).hexdigest()[:16]
    assert pseudonym("LIDC-IDRI-0001", b"key") == expected
    assert pseudonym("LIDC-IDRI-0001", b"other key") != expected
    assert pseudonym("LIDC-IDRI-0002", b"key") != expected
    assert pseudonym("", b"key") == ""


def test_identities_keep_or_hide(monkeypatch):
    monkeypatch.setenv("MEDLENS_PSEUDONYM_KEY", "k")
    hidden, kept = Identities(), Identities(keep=True)
    assert hidden.patient("LIDC-IDRI-0001") == pseudonym("LIDC-IDRI-0001", b"k")
    assert (hidden.name("Doe^Jane"), hidden.birth_date("19450312")) == ("", "")
    assert (kept.patient("X"), kept.name("Doe^Jane"), kept.birth_date("19450312")) == ("X", "Doe^Jane", "19450312")


def test_key_file_is_created_once_and_private(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDLENS_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    key = load_key()
    path = key_file()
    assert path == tmp_path / "medlens" / "pseudonym.key" and len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key() == key
