"""The HTTP API on a real server: every bundle kind, the same answers as `medlens predict`, overlays, batching,
private temporary folders that disappear, the token."""

from __future__ import annotations

import base64
import gzip
import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image



def unpack(packed: dict) -> np.ndarray:
    """An array of the API's ``view`` (base64 of gzip of little-endian bytes)."""
    data = gzip.decompress(base64.b64decode(packed["data"]))
    return np.frombuffer(data, dtype=np.dtype(packed["dtype"]).newbyteorder("<")).reshape(packed["shape"])


def png(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def post(client, bundle: str, files, **query) -> httpx.Response:
    params = {k: "true" if v is True else v for k, v in query.items()}
    return client.post(f"/api/v1/bundles/{bundle}/predict", params=params, files=files)


def test_health_needs_no_token_and_everything_else_does(service, token):
    url, _ = service
    health = httpx.get(f"{url}/api/v1/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "bundles": 6, "token_required": True}
    for path in ("/api/v1/version", "/api/v1/bundles", "/api/v1/bundles/breast"):
        refused = httpx.get(f"{url}{path}", headers={"Authorization": "Bearer wrong-token-000"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}{path}").status_code == 401
    assert httpx.get(f"{url}/api/v1/version", headers={"Authorization": f"Bearer {token}"}).json()["api"] == 1


def test_bundles_are_listed_with_their_cards(client):
    listed = {b["name"]: b for b in client.get("/api/v1/bundles").json()}
    assert set(listed) == {"breast", "breast-bp", "nodules", "nodules-bp", "tumour-seg", "nodule-seg"}
    assert listed["breast"]["explain"] is True and listed["breast-bp"]["explain"] is False
    assert listed["nodules"]["input"]["dims"] == 3 and listed["nodules"]["labels"] == ["benign", "malignant"]
    assert listed["tumour-seg"]["kind"] == "segmenter" and listed["tumour-seg"]["outline"] is True
    for name in listed:
        card = client.get(f"/api/v1/bundles/{name}").json()["card"]
        assert card["markdown"].startswith("# Model card") and "Intended use" in card["markdown"]
        assert card["html"].startswith("<h1>") and "<script" not in card["html"]


def test_docs_are_served_offline(service):
    url, _ = service
    docs = httpx.get(f"{url}/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs and "cdn.jsdelivr" not in docs
    assert httpx.get(f"{url}/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert "/api/v1/bundles/{name}/predict" in paths and "/api/v1/health" in paths


def test_picture_answer_equals_medlens_predict(client, bundles, breast_png):
    """The same rows (columns and probabilities) as the library `medlens predict` calls, plus Grad-CAM."""
    from medlens.deploy.bundle import load_bundle
    from medlens.deploy.predict import predict_files

    answer = post(client, "breast", {"file": ("lesion.png", breast_png.read_bytes())}, explain=True, view=True)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    table, _ = predict_files(load_bundle(bundles["breast"]), [breast_png])
    expected = table.iloc[0].to_dict()
    row = body["rows"][0]
    assert list(row) == list(expected)  # the columns of `medlens predict`, in its order
    assert row["path"] == "lesion.png" and row["label"] == expected["label"] and row["error"] is None
    assert row["p_malignant"] == pytest.approx(expected["p_malignant"], abs=1e-6)
    overlay = png(body["images"][0]["gradcam"])
    assert overlay.mode == "RGB" and min(overlay.size) >= 200
    view = body["view"]
    assert unpack(view["image"]).shape == (1, 28, 28) and view["modality"] == "OT"
    heat = unpack(view["heat"])
    assert heat.shape == (1, 28, 28) and heat.max() == 255 and heat.std() > 10


def test_npz_gives_one_row_per_image_and_bp_bundle_answers(client, breast_npz, tmp_path):
    stack = np.load(breast_npz)["test_images"][:5]
    buffer = io.BytesIO()
    np.savez(buffer, test_images=stack)
    for bundle in ("breast", "breast-bp"):
        body = post(client, bundle, {"file": ("five.npz", buffer.getvalue())}, explain=True).json()
        assert [r["index"] for r in body["rows"]] == [0, 1, 2, 3, 4]
        p = np.array([[r["p_malignant"], r["p_normal, benign"]] for r in body["rows"]])
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert body["images"][0]["gradcam"] is None and "not a convolutional network" in body["notes"][0]


def test_lidc_series_zip_gives_the_nodule_call_outline_and_heat_map(client, lidc_zip):
    """The 3D CNN never saw LIDC-IDRI-0001; its nodule (ratings 5/5/5/4) comes back with its readers'
    outline and a Grad-CAM map carried back onto the CT voxels around it."""
    answer = post(client, "nodules", {"file": ("LIDC-IDRI-0001.zip", lidc_zip.read_bytes())},
                  explain=True, outline=True, view=True)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (row,) = body["rows"]
    assert row["patient_id"] is None and row["patient_pseudonym"].startswith("anon-") and row["label"] == "malignant"
    assert row["roi"].startswith("69.xml nodule 1 (4 readers; malignancy ratings 5/5/5/4)")
    images = body["images"][0]
    assert png(images["outline"]).size[0] > 50 and png(images["gradcam"]).size[0] > 200
    view = body["view"]
    hu, mask, heat = unpack(view["image"]), unpack(view["mask"]), unpack(view["heat"])
    assert hu.shape == mask.shape == heat.shape == (16, 512, 512) and hu.dtype == np.int16
    assert -1100 < np.median(hu) < 200 and view["windows"]["lung"] == {"center": -600.0, "width": 1500.0}
    assert images["slice"] == int(np.argmax((mask > 0).sum(axis=(1, 2))))
    # the map lies around the nodule: its mass is near the mask, none of it far away
    zz, yy, xx = np.nonzero(mask)
    near = np.zeros(mask.shape, bool)
    near[:, max(0, yy.min() - 40):yy.max() + 40, max(0, xx.min() - 40):xx.max() + 40] = True
    assert heat.max() > 0 and heat[~near].max() == 0


def test_feature_model_on_the_series_and_its_features_in_a_shared_batch(client, bundles, lidc_zip, tmp_path):
    """The BP network on Gabor + radiomic features of the readers' nodule: the same call over HTTP, and the
    same probabilities when its features travel in one model call with another request's."""
    from medlens.serve.models import Options, load_served
    from medlens.serve.uploads import Limits, Workspace, receive

    body = post(client, "nodules-bp", {"file": ("LIDC-IDRI-0001.zip", lidc_zip.read_bytes())}, explain=True,
                outline=True).json()
    assert body["rows"][0]["label"] == "malignant" and body["images"][0]["outline"].startswith("data:image/png")
    assert body["images"][0]["gradcam"] is None and "not a convolutional network" in body["notes"][0]
    served = load_served(bundles["nodules-bp"], "nodules-bp")
    jobs = []
    for _ in range(2):
        workspace = Workspace(tmp_path)
        upload = receive([("s.zip", open(lidc_zip, "rb"))], workspace, Limits())
        jobs.append(served.prepare(upload, Options(), workspace))
    served.run(jobs)
    assert jobs[0].proba.shape == (1, 2)
    np.testing.assert_allclose(jobs[0].proba, jobs[1].proba)
    assert jobs[0].proba[0, 1] == pytest.approx(body["rows"][0]["p_malignant"], abs=1e-9)


def test_cube_maps_are_carried_back_onto_the_lesion(bundles, lidc_series):
    """The inverse of the cube preparation: the cube's own mask channel, carried back into the series, lands on
    the readers' consensus mask it was made from."""
    from medlens.deploy.predict import prepare_input
    from medlens.deploy.predict_volume import LesionSelection, find_lesions, read_volume
    from medlens.serve.models import load_served

    served = load_served(bundles["nodules"], "nodules")
    prepared = prepare_input(lidc_series, served.bundle, LesionSelection())
    image = read_volume(lidc_series)
    (lesion,) = find_lesions(lidc_series, image, LesionSelection())
    back = served._cube_in_volume(prepared.images[0, 1], lesion.mask, image.spacing) > 0.5
    assert 2 * (back & lesion.mask).sum() / (back.sum() + lesion.mask.sum()) > 0.95


def test_lesion_position_is_read_from_the_query(client, lidc_zip):
    """`at=z,y,x` selects the lesion of a model that needs no mask; this one reads the mask channel, so the
    answer says why it cannot, and a malformed position is refused."""
    answer = post(client, "nodules", {"file": ("s.zip", lidc_zip.read_bytes())}, at="7,330,370")
    assert answer.status_code == 422 and "give a mask" in answer.json()["error"]
    bad = post(client, "nodules", {"file": ("s.zip", lidc_zip.read_bytes())}, at="seven")
    assert bad.status_code == 422 and "three voxel coordinates" in bad.json()["error"]


def test_series_sent_as_separate_files(client, lidc_series):
    files = [("file", (p.name, p.read_bytes())) for p in sorted(lidc_series.iterdir())]
    body = post(client, "nodules", files).json()
    assert [r["label"] for r in body["rows"]] == ["malignant"] and body["file"].endswith("and 16 more files")


def test_segmenter_answers_areas_outline_and_mask(client, data_root, tmp_path):
    from medlens.data.readers import write_nifti
    from medlens.image import MedImage

    archive = np.load(data_root / "msd_lung_tumour_patches/test_patches.npz")
    i = int(np.argmax(archive["labels"].reshape(len(archive["labels"]), -1).sum(axis=1)))
    path = write_nifti(MedImage(archive["images"][i], (0.8, 0.8)), tmp_path / "patch.nii.gz")
    body = post(client, "tumour-seg", {"file": ("patch.nii.gz", path.read_bytes())}, outline=True, view=True).json()
    (row,) = body["rows"]
    mask = unpack(body["view"]["mask"])
    assert mask.shape == (1, 48, 48) and row["voxels"] == int((mask == 1).sum())
    assert row["area_mm2"] == pytest.approx(row["voxels"] * 0.64)
    assert png(body["images"][0]["outline"]).size == (240, 240)


def test_volume_segmenter_measures_in_cubic_millimetres(client, data_root):
    """A 3D U-Net on an LIDC nodule VOI (NIfTI, HU): the mask in the volume's own geometry, CT windows."""
    from medlens.data.readers import read_nifti

    voi = sorted((data_root / "lidc_idri_nodule_vois/image").glob("*.nii.gz"))[0]
    image = read_nifti(voi)
    body = post(client, "nodule-seg", {"file": (voi.name, voi.read_bytes())}, outline=True, view=True).json()
    mask = unpack(body["view"]["mask"])
    assert mask.shape == image.shape and body["view"]["kind"] == "volume" and "lung" in body["view"]["windows"]
    (row,) = body["rows"]
    assert row["voxels"] == int((mask == 1).sum())
    assert row["volume_mm3"] == pytest.approx(row["voxels"] * np.prod(image.spacing), rel=1e-6)
    assert body["images"][0]["slice"] == int(np.argmax((mask > 0).sum(axis=(1, 2))))


def test_concurrent_requests_share_model_calls_and_match_single_ones(client, service, breast_npz):
    """16 requests at once are batched (fewer model calls than requests) and each gets its own answer."""
    _, svc = service
    images = np.load(breast_npz)["test_images"][:16]
    files = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    alone = [post(client, "breast", {"file": ("x.png", f)}).json()["rows"][0]["p_malignant"] for f in files]
    batcher = svc.batchers["breast"]
    before = len(batcher.batches)
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda f: post(client, "breast", {"file": ("x.png", f)}).json(), files))
    assert [t["rows"][0]["p_malignant"] for t in together] == pytest.approx(alone, abs=1e-6)
    runs = batcher.batches[before:]
    assert sum(runs) == 16 and len(runs) < 16 and max(runs) > 1


def test_workspaces_are_removed_after_the_answer(client, service, breast_png):
    _, svc = service
    post(client, "breast", {"file": ("a.png", breast_png.read_bytes())}, explain=True)
    assert list(svc.root.iterdir()) == []
    assert svc.root.stat().st_mode & 0o077 == 0  # private: only the server's user may enter


def test_answers_are_not_cached_and_the_page_cannot_load_from_elsewhere(service):
    url, _ = service
    assert httpx.get(f"{url}/api/v1/health").headers["cache-control"] == "no-store"
    page = httpx.get(f"{url}/")
    policy = page.headers["content-security-policy"]
    assert page.status_code == 200 and "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "http" not in page.text.replace("http-equiv", "")  # no address of another host in the page
    for asset in ("app.js", "style.css"):
        text = httpx.get(f"{url}/static/{asset}").text
        assert "http://" not in text and "https://" not in text


def test_json_error_for_every_unknown_route(service):
    url, _ = service
    answer = httpx.get(f"{url}/api/v1/nothing-here")
    assert answer.status_code == 404 and json.loads(answer.text) == {"error": "not found: /api/v1/nothing-here",
                                                                       "status": 404}
