"""LIDC-IDRI reader XML: parsing, reader masks on the loaded series, and agreement with the VOI masks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import polygon

from realdata import need
from medlens.data.readers import (
    lidc_reader_masks,
    nodule_centre,
    read_dicom,
    read_lidc_xml,
    read_nifti,
    read_picture,
)
from medlens.errors import GeometryError
from medlens.image import MedImage

pytestmark = pytest.mark.filterwarnings("ignore:.*non-DICOM file")

LIDC_0002 = ("lidc_idri_ct_more/LIDC-IDRI-0002/1.3.6.1.4.1.14519.5.2.1.6279.6001.490157381160200744295382098329/"
             "1.3.6.1.4.1.14519.5.2.1.6279.6001.619372068417051974713149104919")
LIDC_0003 = ("lidc_idri_ct_more/LIDC-IDRI-0003/1.3.6.1.4.1.14519.5.2.1.6279.6001.101370605276577556143013894866/"
             "1.3.6.1.4.1.14519.5.2.1.6279.6001.170706757615202213033480003264")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def ct1(lidc_series_dir):
    return read_dicom(lidc_series_dir)


@pytest.fixture(scope="module")
def masks1(lidc_series_dir, ct1):
    return lidc_reader_masks(lidc_series_dir / "69.xml", ct1)


def test_parse_69_xml(lidc_series_dir):
    sessions = read_lidc_xml(lidc_series_dir / "69.xml")
    assert len(sessions) == 4
    assert sum(len(s.nodules) for s in sessions) == 13  # 13 <unblindedReadNodule> in the file
    rated = [n for s in sessions for n in s.nodules if n.malignancy is not None]
    assert sorted(n.malignancy for n in rated) == [4, 5, 5, 5]
    first = sessions[0].nodules[0]
    assert first.nodule_id == "Nodule 001"
    assert first.characteristics == {"subtlety": 5, "internalStructure": 1, "calcification": 6, "sphericity": 3,
                                     "margin": 3, "lobulation": 3, "spiculation": 4, "texture": 5, "malignancy": 5}
    roi = first.rois[0]
    assert roi.z == -125.0 and roi.inclusion
    assert roi.sop_uid == "1.3.6.1.4.1.14519.5.2.1.6279.6001.110383487652933113465768208719"
    assert roi.points[:2].tolist() == [[312, 355], [311, 356]]
    assert sum(len(n.rois) for n in rated) == 32  # README: all 32 ROIs of the nodule


def test_four_reader_masks_on_the_right_slices(ct1, masks1):
    assert [m.malignancy for m in masks1] == [5, 5, 5, 4]
    assert [m.reader for m in masks1] == [0, 1, 2, 3]
    z = np.array([p[2] for p in ct1.meta["slice_positions"]])
    for m in masks1:
        assert m.mask.shape == ct1.shape and m.mask.dtype == bool
        on = z[m.mask.any(axis=(1, 2))]
        assert on.min() >= -125.0 and on.max() <= -105.0
    for a, b in itertools.combinations(masks1, 2):
        assert dice(a.mask, b.mask) > 0.6


def test_masks_follow_the_contours(lidc_series_dir, ct1, masks1):
    """Each ROI lands on the slice with its SOP UID, holding its outline and its filled interior."""
    sessions = read_lidc_xml(lidc_series_dir / "69.xml")
    nodule = next(n for n in sessions[0].nodules if n.malignancy is not None)
    for roi in nodule.rois:
        k = ct1.meta["sop_uids"].index(roi.sop_uid)
        xs, ys = roi.points[:, 0], roi.points[:, 1]
        assert masks1[0].mask[k, ys, xs].all()
        rr, cc = polygon(ys, xs, shape=ct1.shape[1:])
        assert masks1[0].mask[k, rr, cc].all()
        assert masks1[0].mask[k].sum() <= len(rr) + len(xs)


def test_masks_agree_with_the_voi_mask(data_root, ct1, masks1):
    """README: Dice 0.94 against the >=2-reader consensus, 0.93 against any reader."""
    voi = read_nifti(need(data_root, "lidc_idri_nodule_vois/nodule_mask/LIDC-IDRI-0001_R_1.nii.gz"))
    z, y, x = (int(round((voi.origin[a] - ct1.origin[a]) / ct1.spacing[a])) for a in range(3))
    placed = np.zeros(ct1.shape, bool)
    d, h, w = voi.shape
    placed[z:z + d, y:y + h, x:x + w] = voi.array[0] > 0
    votes = np.sum([m.mask for m in masks1], axis=0)
    assert dice(votes >= 2, placed) > 0.9
    assert dice(votes >= 1, placed) > 0.9


def test_z_fallback_when_sop_uids_do_not_match(lidc_series_dir, ct1, masks1):
    from copy import deepcopy

    renamed = deepcopy(ct1)
    renamed.meta["sop_uids"] = [f"1.2.3.{i}" for i in range(len(ct1.meta["sop_uids"]))]
    again = lidc_reader_masks(lidc_series_dir / "69.xml", renamed)
    assert len(again) == len(masks1)
    for a, b in zip(again, masks1):
        assert np.array_equal(a.mask, b.mask)


def test_exclusion_rois_are_holes(data_root):
    """71.xml has two inclusion=FALSE ROIs (z -107, -102, outside the stored slices): rasterise them on
    an image whose two slices carry those SOP UIDs, and check that their interiors are cut out."""
    folder = need(data_root, LIDC_0002)
    sessions = read_lidc_xml(folder / "71.xml")
    holes = [(s.index, n, r) for s in sessions for n in s.nodules for r in n.rois if not r.inclusion]
    assert [r.z for _, _, r in holes] == [-102.0, -107.0]
    uids = [r.sop_uid for _, _, r in holes]
    frame = MedImage(np.zeros((1, 2, 512, 512), np.int16), (5.0, 0.681641, 0.681641),
                     meta={"sop_uids": uids, "slice_positions": [[0.0, 0.0, r.z] for _, _, r in holes]})
    masks = lidc_reader_masks(folder / "71.xml", frame)
    for k, (reader, nodule, roi) in enumerate(holes):
        mask = next(m.mask for m in masks if m.reader == reader and m.nodule_id == nodule.nodule_id)
        rr, cc = polygon(roi.points[:, 1], roi.points[:, 0], shape=frame.shape[1:])
        interior = np.zeros(frame.shape[1:], bool)
        interior[rr, cc] = True
        interior[roi.points[:, 1], roi.points[:, 0]] = False
        outline = mask[k][roi.points[:, 1], roi.points[:, 0]]
        including = np.zeros(frame.shape[1:], bool)
        for other in nodule.rois:
            if other.inclusion and other.sop_uid == roi.sop_uid:
                including[polygon(other.points[:, 1], other.points[:, 0], shape=frame.shape[1:])] = True
        assert interior.any() and including[interior].all()  # the hole lies inside the nodule's contour
        assert not mask[k][interior].any()
        assert outline.all()  # the hole's outline is nodule tissue, inside the including contour
    on_series = lidc_reader_masks(folder / "71.xml", read_dicom(folder))
    assert sorted(m.malignancy for m in on_series if m.malignancy is not None) == [4, 5]  # 2 readers


def test_lidc_0003_ratings(data_root):
    folder = need(data_root, LIDC_0003)
    masks = lidc_reader_masks(folder / "72.xml", read_dicom(folder))
    assert [m.malignancy for m in masks if m.malignancy is not None] == [5, 5, 3, 4]


def test_nodule_centre_is_the_consensus_centre(lidc_series_dir, ct1, masks1, data_root):
    centre = nodule_centre(lidc_series_dir / "69.xml", ct1, masks1[2])
    votes = np.sum([m.mask for m in masks1], axis=0)
    expected = ndimage.center_of_mass(votes >= math.ceil(4 / 2))
    assert centre == pytest.approx(expected)
    z = [p[2] for p in ct1.meta["slice_positions"]]
    assert -125.0 <= np.interp(centre[0], range(len(z)), z) <= -105.0
    voi = read_nifti(need(data_root, "lidc_idri_nodule_vois/nodule_mask/LIDC-IDRI-0001_R_1.nii.gz"))
    offset = [(voi.origin[a] - ct1.origin[a]) / ct1.spacing[a] for a in range(3)]
    voi_centre = np.add(ndimage.center_of_mass(voi.array[0] > 0), offset)
    assert np.linalg.norm(np.subtract(centre, voi_centre) * ct1.spacing) < 2.0  # mm


def test_masks_need_a_dicom_series(lidc_series_dir, data_root):
    picture = read_picture(need(data_root, "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png"))
    with pytest.raises(GeometryError, match="volume"):
        lidc_reader_masks(lidc_series_dir / "69.xml", picture)
    voi = read_nifti(need(data_root, "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"))
    with pytest.raises(GeometryError, match="sop_uids"):
        lidc_reader_masks(lidc_series_dir / "69.xml", voi)


def _same_sessions(a, b) -> None:
    assert [(s.index, s.radiologist_id, len(s.nodules)) for s in a] == [(s.index, s.radiologist_id, len(s.nodules))
                                                                        for s in b]
    for n, m in zip((n for s in a for n in s.nodules), (n for s in b for n in s.nodules)):
        assert (n.nodule_id, n.characteristics, len(n.rois)) == (m.nodule_id, m.characteristics, len(m.rois))
        for r, q in zip(n.rois, m.rois):
            assert (r.sop_uid, r.z, r.inclusion) == (q.sop_uid, q.z, q.inclusion)
            assert r.points.dtype == q.points.dtype and np.array_equal(r.points, q.points)


def test_contour_points_written_otherwise_are_read_in_their_place(data_root, tmp_path):
    """Points in the usual form are read as text (the fast path), others as elements; the order of a contour's
    points is the document's whatever the mix, and text an roi should not have is not taken for points."""
    source = need(data_root, f"{LIDC_0003}/72.xml")
    original = read_lidc_xml(source)
    text = source.read_text()
    pieces = text.split("<edgeMap>")
    # every third point with a comment in it (not the usual form: parsed as an element), the others untouched
    mixed = pieces[0] + "".join(("<edgeMap>" + p.replace("<xCoord>", "<xCoord><!-- c -->", 1)) if i % 3 == 0
                                else "<edgeMap>" + p for i, p in enumerate(pieces[1:]))
    (tmp_path / "mixed.xml").write_text(mixed)
    _same_sessions(original, read_lidc_xml(tmp_path / "mixed.xml"))
    # every point as a prefixed element of the same namespace
    prefixed = text.replace('xmlns="http://www.nih.gov"', 'xmlns="http://www.nih.gov" xmlns:n="http://www.nih.gov"')
    prefixed = prefixed.replace("<edgeMap>", "<n:edgeMap>").replace("</edgeMap>", "</n:edgeMap>")
    (tmp_path / "prefixed.xml").write_text(prefixed)
    _same_sessions(original, read_lidc_xml(tmp_path / "prefixed.xml"))
    # stray words in an roi are not points
    stray = text.replace("<inclusion>TRUE</inclusion>", "<inclusion>TRUE</inclusion> note ", 1)
    (tmp_path / "stray.xml").write_text(stray)
    _same_sessions(original, read_lidc_xml(tmp_path / "stray.xml"))
