"""Where a PACS is: a DICOMweb base URL or a DIMSE address, parsed once.

Two forms are accepted:

* ``http://host:port/dicom-web`` (or ``https://``): the DICOMweb base under which the server answers
  QIDO-RS (``/studies?...``), WADO-RS (``/studies/{uid}/series/{uid}``) and STOW-RS (``POST /studies``);
  for Orthanc with its DICOMweb plugin that is ``http://host:8042/dicom-web``.
* ``dimse://AET@host:port``: classic DICOM networking (PS3.7/PS3.8) to the application entity titled
  ``AET`` listening on ``host:port``; medlens calls it with its own AE title (``--aet``, default
  ``MEDLENS``), which the PACS must know for C-MOVE.

Credentials in a URL (``http://user:password@host``) are refused: a URL is printed in messages and
logs, and a password must not be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from medlens.errors import ConfigError

DICOMWEB = "dicomweb"
DIMSE = "dimse"
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
"""PS3.5 AE value representation: 1-16 characters of the default repertoire, no backslash or control."""

FORMS = "a DICOMweb base (http://host:port/dicom-web) or a DIMSE address (dimse://AET@host:port)"


@dataclass(frozen=True)
class PacsAddress:
    """A parsed PACS address.

    Attributes
    ----------
    kind : str
        ``"dicomweb"`` or ``"dimse"``.
    url : str
        The address as given (trailing ``/`` removed); what messages name.
    host, port : str, int
        Network location.
    called_aet : str or None
        The PACS's AE title (DIMSE only).
    """

    kind: str
    url: str
    host: str
    port: int
    called_aet: str | None = None

    def __str__(self) -> str:
        return self.url


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` stripped of surrounding spaces, or :class:`ConfigError` if it is no valid AE title."""
    stripped = title.strip()
    if not AE_TITLE.match(stripped):
        raise ConfigError(f"{what} {title!r}: an AE title has 1 to 16 printable characters and no backslash")
    return stripped


def parse_address(text: str) -> PacsAddress:
    """Parse ``text`` into a :class:`PacsAddress` (see the module docstring for the two forms).

    Raises
    ------
    ConfigError
        Any other scheme, a missing host or port, credentials in the URL, or a bad AE title.
    """
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "dimse"):
        raise ConfigError(f"PACS address {text!r}: expected {FORMS}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"PACS address {text!r}: bad port ({exc})") from exc
    if not parts.hostname:
        raise ConfigError(f"PACS address {text!r}: no host; expected {FORMS}")
    if scheme == "dimse":
        if not parts.username or port is None:
            raise ConfigError(f"PACS address {text!r}: a DIMSE address names the AE title and the port: "
                              "dimse://AET@host:port")
        if parts.password is not None or parts.path not in ("", "/"):
            raise ConfigError(f"PACS address {text!r}: a DIMSE address is dimse://AET@host:port, nothing more")
        aet = check_ae_title(parts.username, f"PACS address {text!r}: AE title")
        return PacsAddress(DIMSE, f"dimse://{aet}@{parts.hostname}:{port}", parts.hostname, port, aet)
    if parts.username or parts.password:
        raise ConfigError(f"PACS address {text!r}: credentials in a URL end up in logs; medlens does not take them")
    url = text.strip().rstrip("/")
    return PacsAddress(DICOMWEB, url, parts.hostname, port or (443 if scheme == "https" else 80))
