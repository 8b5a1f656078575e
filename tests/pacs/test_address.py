"""PACS addresses: the two accepted forms and clear refusals."""

from __future__ import annotations

import pytest

from medlens.errors import ConfigError
from medlens.pacs.address import DICOMWEB, DIMSE, parse_address


def test_dicomweb_base():
    address = parse_address("http://127.0.0.1:8042/dicom-web/")
    assert (address.kind, address.host, address.port, address.url) == (DICOMWEB, "127.0.0.1", 8042,
                                                                       "http://127.0.0.1:8042/dicom-web")
    assert parse_address("https://pacs.example.org/dicomweb").port == 443


def test_dimse_address():
    address = parse_address("dimse://ORTHANC@pacs.local:4242")
    assert (address.kind, address.called_aet, address.host, address.port) == (DIMSE, "ORTHANC", "pacs.local", 4242)
    assert str(address) == "dimse://ORTHANC@pacs.local:4242"


@pytest.mark.parametrize("text,problem", [
    ("ftp://host/dicom-web", "expected a DICOMweb base"),
    ("dimse://host:4242", "names the AE title"),
    ("dimse://ORTHANC@host", "names the AE title"),
    ("dimse://A_TITLE_LONGER_THAN_16@host:4242", "1 to 16 printable"),
    ("http://user:secret@host/dicom-web", "credentials"),
    ("http://host:99999/dicom-web", "bad port"),
])
def test_bad_addresses_are_refused_with_the_reason(text, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_address(text)
