"""A real Orthanc PACS for tests and benchmarks, started and stopped by the caller.

``OrthancServer(folder)`` writes a configuration into ``folder`` (storage and index there too), picks free
ports on 127.0.0.1 for HTTP, DICOM and medlens's own C-MOVE listener, loads the DICOMweb plugin, registers
medlens's AE title (``MEDLENS`` at 127.0.0.1 and that listener port) so that C-FIND, C-GET and C-MOVE from
it are allowed, and checks the called AE title (``ORTHANC``), so that a wrong one is refused.

Orthanc 1.10 has no option to bind to one interface: it listens on every interface. Its HTTP server
answers loopback clients only (``RemoteAccessAllowed: false``) and its DICOM server only registered
modalities at their registered host (``DicomCheckModalityHost``, no ``DicomAlwaysAllow*``).

Needs the Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``scripts/debian-packages.txt``); a
test that finds them missing is skipped (a failure under ``MEDLENS_REQUIRE_DATA=1``).
"""

from __future__ import annotations

import glob
import json
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import requests

PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*", "/usr/lib/orthanc/libOrthancDicomWeb.so*")
AET = "ORTHANC"
MEDLENS_AET = "MEDLENS"
START_TIMEOUT_S = 60


def missing() -> str | None:
    """Why Orthanc cannot be started here (None when it can)."""
    if shutil.which("Orthanc") is None:
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb; scripts/system.sh)"
    if not any(glob.glob(pattern) for pattern in PLUGIN_GLOBS):
        return "Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb; scripts/system.sh)"
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


class OrthancServer:
    """One Orthanc process with its own storage folder (see the module docstring)."""

    def __init__(self, folder: Path, lua: str | None = None):
        self.folder = Path(folder)
        self.http_port, self.dicom_port, self.move_port = free_ports(3)
        self.lua = lua
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"dimse://{AET}@127.0.0.1:{self.dicom_port}"

    def config(self) -> dict:
        plugin = next(path for pattern in PLUGIN_GLOBS for path in sorted(glob.glob(pattern)))
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "medlens-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True, "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False,
            "DicomModalities": {"medlens": {"AET": MEDLENS_AET, "Host": "127.0.0.1", "Port": self.move_port}},
            "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "SaveJobs": False, "HttpThreadsCount": 4, "DicomThreadsCount": 2, "ConcurrentJobs": 1,
            "StableAge": 1, "DicomAssociationCloseDelay": 0,
        }
        if self.lua is not None:
            script = self.folder / "filter.lua"
            script.write_text(self.lua)
            config["LuaScripts"] = [str(script)]
        return config

    def start(self) -> "OrthancServer":
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        log = open(self.folder / "orthanc.log", "wb")
        self.process = subprocess.Popen(["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if requests.get(f"{self.base}/system", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        path = self.folder / "orthanc.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # REST helpers (Orthanc's own API, for setting up and inspecting the server in tests)
    def get(self, path: str):
        response = requests.get(f"{self.base}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def upload(self, files) -> list[str]:
        """Store DICOM files (paths or bytes) through Orthanc's REST API; their Orthanc instance ids."""
        ids = []
        for item in files:
            data = item if isinstance(item, bytes) else Path(item).read_bytes()
            response = requests.post(f"{self.base}/instances", data=data, timeout=30)
            response.raise_for_status()
            ids.append(response.json()["ID"])
        return ids

    def delete(self, kind: str, orthanc_id: str) -> None:
        requests.delete(f"{self.base}/{kind}/{orthanc_id}", timeout=30).raise_for_status()

    def clear(self) -> None:
        """Remove every patient (and so every study, series and instance)."""
        for patient in self.get("/patients"):
            self.delete("patients", patient)

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's id of a study, found by its StudyInstanceUID."""
        response = requests.post(f"{self.base}/tools/lookup", data=study_uid, timeout=30)
        response.raise_for_status()
        return next((item["ID"] for item in response.json() if item["Type"] == "Study"), None)

    def series_of(self, study_uid: str) -> list[dict]:
        """The series of a study: Orthanc's id, MainDicomTags and instance ids."""
        study = self.study_id(study_uid)
        return [] if study is None else self.get(f"/studies/{study}/series")

    def instance_file(self, orthanc_id: str) -> bytes:
        response = requests.get(f"{self.base}/instances/{orthanc_id}/file", timeout=30)
        response.raise_for_status()
        return response.content
