"""LIDC-IDRI reader annotations (``LidcReadMessage`` XML) and the nodule masks they outline.

Each ``readingSession`` is one radiologist's read. Every ``unblindedReadNodule`` has an id (local to
that reader), rated ``characteristics`` (subtlety, internalStructure, calcification, sphericity,
margin, lobulation, spiculation, texture, malignancy; absent for nodules < 3 mm) and one ``roi``
per slice: the slice's ``imageSOP_UID`` and ``imageZposition``, an ``inclusion`` flag and the
contour as ``edgeMap`` pixel points (x = column, y = row).

Rasterising follows the LIDC convention (Armato et al., Med Phys 38:915, 2011; McNitt-Gray et al.,
Acad Radiol 14:1464, 2007): readers drew the outline on the first pixels *outside* the nodule, and
:func:`lidc_reader_masks` keeps those outline pixels with the filled interior
(``skimage.draw.polygon``), as pylidc does. An ``inclusion = FALSE`` ROI outlines a hole: its
interior is removed from the slice's union of inclusion ROIs (its outline pixels, nodule tissue by
the same convention, stay). ROIs are placed on the loaded slices by SOP Instance UID, falling back
to the z position when the UID is not among the slices.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import polygon

from medlens.errors import GeometryError, MissingPathError, UnreadableFileError
from medlens.image import MedImage

Z_TOLERANCE_MM = 0.1


@dataclass
class Roi:
    """One contour of a nodule on one slice."""

    sop_uid: str
    z: float
    inclusion: bool
    points: np.ndarray
    """``(N, 2)`` integer (x, y) = (column, row) pixel positions of the contour."""


@dataclass
class Nodule:
    """One reader's nodule: its id, rated characteristics and per-slice contours."""

    nodule_id: str
    characteristics: dict[str, int]
    rois: list[Roi]

    @property
    def malignancy(self) -> int | None:
        """The 1–5 malignancy rating, None for nodules < 3 mm (unrated)."""
        return self.characteristics.get("malignancy")


@dataclass
class ReaderSession:
    """One radiologist's reading session."""

    index: int
    radiologist_id: str
    nodules: list[Nodule] = field(default_factory=list)


@dataclass
class ReaderNodule:
    """One reader's nodule rasterised on a loaded image."""

    reader: int
    nodule_id: str
    malignancy: int | None
    characteristics: dict[str, int]
    mask: np.ndarray
    """Boolean ``(D, H, W)`` mask on the image's sorted slices."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if _local(c.tag) == name]


def _text(element: ET.Element, name: str, default: str = "") -> str:
    child = _child(element, name)
    return child.text.strip() if child is not None and child.text else default


def read_lidc_xml(path: str | Path) -> list[ReaderSession]:
    """Parse an LIDC-IDRI annotation XML into reading sessions.

    Parameters
    ----------
    path : str or Path
        The ``LidcReadMessage`` XML file that accompanies an LIDC-IDRI series.

    Returns
    -------
    list of ReaderSession
        In file order; each holds its ``unblindedReadNodule`` entries (non-nodules are left out).
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(path, "file")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, LookupError, UnicodeError, ValueError) as exc:  # LookupError: unknown encoding
        raise UnreadableFileError(path, f"not well-formed XML ({type(exc).__name__}: {exc})") from exc
    if _local(root.tag) != "LidcReadMessage":
        raise UnreadableFileError(path, f"root element is <{_local(root.tag)}>, not an LIDC <LidcReadMessage>")
    sessions = []
    for index, session in enumerate(_children(root, "readingSession")):
        nodules = []
        for nodule in _children(session, "unblindedReadNodule"):
            chars = _child(nodule, "characteristics")
            try:
                characteristics = {} if chars is None else {
                    _local(c.tag): int(c.text) for c in chars if c.text and c.text.strip()
                }
                rois = [_roi(r) for r in _children(nodule, "roi")]
            except (TypeError, ValueError, OverflowError) as exc:
                raise UnreadableFileError(path, f"nodule {_text(nodule, 'noduleID')!r}: bad rating or ROI "
                                                f"({exc})") from exc
            nodules.append(Nodule(_text(nodule, "noduleID"), characteristics, rois))
        sessions.append(ReaderSession(index, _text(session, "servicingRadiologistID"), nodules))
    return sessions


def _roi(element: ET.Element) -> Roi:
    points = np.array(
        [(int(_text(e, "xCoord")), int(_text(e, "yCoord"))) for e in _children(element, "edgeMap")],
        dtype=np.int64,
    ).reshape(-1, 2)
    return Roi(
        sop_uid=_text(element, "imageSOP_UID"),
        z=float(_text(element, "imageZposition")),
        inclusion=_text(element, "inclusion", "TRUE").upper() == "TRUE",
        points=points,
    )


def _slice_index(image: MedImage) -> tuple[dict[str, int], np.ndarray]:
    sop_uids = image.meta.get("sop_uids")
    positions = image.meta.get("slice_positions")
    if not sop_uids or not positions or len(sop_uids) != image.shape[0]:
        raise GeometryError(
            f"{image.source}: LIDC contours need a DICOM series read by read_dicom "
            "(meta 'sop_uids' and 'slice_positions' per slice)"
        )
    return {u: i for i, u in enumerate(sop_uids)}, np.array([p[2] for p in positions])


def _rasterise(nodule: Nodule, shape: tuple[int, int, int], by_uid: dict[str, int], z: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    holes = np.zeros(shape, dtype=bool)
    for roi in nodule.rois:
        k = by_uid.get(roi.sop_uid)
        if k is None:
            near = int(np.argmin(np.abs(z - roi.z)))
            if abs(z[near] - roi.z) > Z_TOLERANCE_MM:
                continue
            k = near
        xs, ys = roi.points[:, 0], roi.points[:, 1]
        inside = (ys >= 0) & (ys < shape[1]) & (xs >= 0) & (xs < shape[2])
        rr, cc = polygon(ys, xs, shape=shape[1:])
        if roi.inclusion:
            mask[k, rr, cc] = True
            mask[k, ys[inside], xs[inside]] = True
        else:
            hole = np.zeros(shape[1:], dtype=bool)
            hole[rr, cc] = True
            hole[ys[inside], xs[inside]] = False
            holes[k] |= hole
    return mask & ~holes


def lidc_reader_masks(xml_path: str | Path, image: MedImage) -> list[ReaderNodule]:
    """Every reader's nodules that have a contour on the slices of ``image``, as boolean masks.

    Parameters
    ----------
    xml_path : str or Path
        The series' LIDC XML.
    image : MedImage
        The series read by :func:`~medlens.data.readers.dicom.read_dicom` (its ``meta`` holds the
        per-slice ``sop_uids`` and ``slice_positions`` in sorted order).

    Returns
    -------
    list of ReaderNodule
        In reader then nodule order; ``mask`` has the image's spatial shape ``(D, H, W)``.
    """
    if len(image.shape) != 3:
        raise GeometryError(f"{image.source}: LIDC masks need a volume, got spatial shape {image.shape}")
    by_uid, z = _slice_index(image)
    out = []
    for session in read_lidc_xml(xml_path):
        for nodule in session.nodules:
            mask = _rasterise(nodule, image.shape, by_uid, z)
            if mask.any():
                out.append(ReaderNodule(session.index, nodule.nodule_id, nodule.malignancy,
                                        nodule.characteristics, mask))
    return out


@dataclass
class ConsensusNodule:
    """One lesion as the readers agree on it: the masks of the readers who outlined it, merged."""

    readers: list[int]
    """Reading sessions whose masks overlap this lesion."""
    members: list[tuple[int, str]]
    """(reader, nodule id) of every reader mask merged into this lesion."""
    malignancy: list[int]
    """Each of those readers' malignancy rating (1–5; readers who did not rate it are left out)."""
    mask: np.ndarray
    """Boolean ``(D, H, W)`` 50 % consensus: voxels marked by at least ``⌈n/2⌉`` of the ``n`` readers."""

    @property
    def centre(self) -> tuple[float, float, float]:
        """Voxel (z, y, x) centre of mass of the consensus mask."""
        return tuple(float(c) for c in ndimage.center_of_mass(self.mask))


def consensus_nodules(xml_path: str | Path, image: MedImage) -> list[ConsensusNodule]:
    """The lesions of ``image`` with their 50 % consensus masks, largest agreement first.

    Reader masks that overlap are taken to outline the same lesion (pylidc's annotation clustering;
    one reader's overlapping masks are merged into one). Each cluster's consensus keeps the voxels
    that at least ``⌈n/2⌉`` of its ``n`` readers mark (the 50 % consensus of LIDC studies); where a
    chain of pairwise overlaps leaves no voxel with that many votes, the union is kept instead.

    Parameters
    ----------
    xml_path : str or Path
        The series' LIDC XML.
    image : MedImage
        The series read by :func:`~medlens.data.readers.dicom.read_dicom`.

    Returns
    -------
    list of ConsensusNodule
        Sorted by the number of readers (descending), then by consensus volume (descending).
    """
    masks = lidc_reader_masks(xml_path, image)
    cluster = list(range(len(masks)))  # union-find over overlapping masks

    def root(i: int) -> int:
        while cluster[i] != i:
            cluster[i] = cluster[cluster[i]]
            i = cluster[i]
        return i

    for i in range(len(masks)):
        for j in range(i):
            if (masks[i].mask & masks[j].mask).any():
                cluster[root(i)] = root(j)
    out = []
    for r in sorted({root(i) for i in range(len(masks))}):
        members = [m for i, m in enumerate(masks) if root(i) == r]
        by_reader: dict[int, np.ndarray] = {}
        ratings: dict[int, int] = {}
        for m in members:
            by_reader[m.reader] = by_reader[m.reader] | m.mask if m.reader in by_reader else m.mask
            if m.malignancy is not None:
                ratings[m.reader] = m.malignancy
        votes = np.sum(list(by_reader.values()), axis=0)
        consensus = votes >= math.ceil(len(by_reader) / 2)
        out.append(ConsensusNodule(sorted(by_reader), [(m.reader, m.nodule_id) for m in members],
                                   [ratings[k] for k in sorted(ratings)],
                                   consensus if consensus.any() else votes > 0))
    return sorted(out, key=lambda n: (-len(n.readers), -int(n.mask.sum())))


def nodule_centre(xml_path: str | Path, image: MedImage, nodule: ReaderNodule) -> tuple[float, float, float]:
    """The (z, y, x) voxel centre of a nodule as the readers agree on it.

    The centre of mass of the 50 % consensus mask (:func:`consensus_nodules`) of the lesion that
    ``nodule.mask`` overlaps.

    Parameters
    ----------
    xml_path : str or Path
        The series' LIDC XML.
    image : MedImage
        The series, as given to :func:`lidc_reader_masks`.
    nodule : ReaderNodule
        One of the masks that :func:`lidc_reader_masks` returned for this image.

    Returns
    -------
    tuple of float
        Voxel coordinates (z, y, x) in ``image``'s array.
    """
    for lesion in consensus_nodules(xml_path, image):
        if (nodule.reader, nodule.nodule_id) in lesion.members:
            return lesion.centre
    raise GeometryError(f"{xml_path}: nodule {nodule.nodule_id!r} does not lie on {image.source}")
