"""What the installed Orthanc does with the pitfalls the issue names, and how medlens guards against them.

Some Orthanc versions answered a STOW-RS request sent with chunked transfer encoding (what dicomweb-client
does for bodies over 1 MB) with success and stored nothing. The Debian Orthanc this suite runs stores such
requests (first test: if a package update brings the fault back, this test says so). medlens sends STOW-RS
bodies whole, with a Content-Length (second test), and checks after every push that the server holds what
it acknowledged: an Orthanc whose Lua filter refuses SR objects, and which still acknowledges them (in the
STOW-RS answer and with a C-STORE success), is caught (third).
"""

from __future__ import annotations

import pydicom
import pytest
import requests

from medlens.errors import PacsError
from medlens.pacs.address import parse_address
from medlens.pacs.client import connect
from medlens.pacs.dicomweb import DicomWebPacs
from medlens.pacs.push import push_objects
from medlens.pacs.validate import Validation
from orthanc_server import OrthancServer

DROP_SR = """
function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.Modality ~= 'SR'
end
"""


def test_installed_orthanc_stores_chunked_stow_requests(orthanc, lidc_series_dir):
    from dicomweb_client.api import DICOMwebClient

    orthanc.clear()
    datasets = [pydicom.dcmread(p) for p in sorted(lidc_series_dir.glob("*.dcm"))[:4]]
    client = DICOMwebClient(orthanc.dicomweb, chunk_size=100_000)  # about 2 MB body: 21 chunks
    client.store_instances(datasets)
    assert len(orthanc.get("/instances")) == 4


def test_medlens_sends_stow_requests_whole(orthanc, lidc_series_dir):
    orthanc.clear()
    session, sent = requests.Session(), []
    session.hooks["response"].append(lambda response, *args, **kwargs: sent.append(response.request))
    files = sorted(lidc_series_dir.glob("*.dcm"))
    stored = DicomWebPacs(parse_address(orthanc.dicomweb), timeout=30, session=session).store(files)
    assert len(stored) == 16 and len(orthanc.get("/instances")) == 16
    (post,) = [r for r in sent if r.method == "POST"]
    assert "Transfer-Encoding" not in post.headers and int(post.headers["Content-Length"]) > 8_000_000


@pytest.fixture(scope="module")
def dropping_orthanc(tmp_path_factory, orthanc):
    with OrthancServer(tmp_path_factory.mktemp("dropping-orthanc"), lua=DROP_SR) as server:
        yield server


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_an_acknowledged_object_the_server_does_not_hold_is_an_error(dropping_orthanc, protocol, lidc, tmp_path):
    dropping_orthanc.clear()
    sr = _small_sr(lidc, tmp_path)
    url = dropping_orthanc.dicomweb if protocol == "dicomweb" else dropping_orthanc.dimse
    with pytest.raises(PacsError, match=rf"does not hold 1 of them afterwards \({sr[1]}\)"):
        push_objects(connect(url), [Validation(sr[0])])
    assert dropping_orthanc.get("/instances") == []


def _small_sr(lidc, tmp_path):
    """A real SR of medlens on LIDC-IDRI-0001 (a finding at a given position), and its SOP Instance UID."""
    from medlens.pacs.lesions import lesion_at
    from medlens.pacs.models import CLASSIFIER, Classifier, ModelIdentity, Prediction
    from medlens.pacs.sr import Finding, write_sr

    image, sources, _ = lidc
    identity = ModelIdentity("nodules", CLASSIFIER, "0" * 64, "cnn3d", None)
    classifier = Classifier(identity, None, ["benign", "malignant"], 0.5, "fixed threshold 0.5", "CT", False)
    finding = Finding(lesion_at((8, 300, 300), image), Prediction({"benign": 0.4, "malignant": 0.6}, "malignant", 0.5))
    written = write_sr([finding], sources, classifier, tmp_path / "sr.dcm")
    return written.path, written.sop_uid
