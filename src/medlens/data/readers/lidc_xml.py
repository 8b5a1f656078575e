"""LIDC-IDRI reader annotations (``LidcReadMessage`` XML) and the nodule masks they outline.

Each ``readingSession`` is one radiologist's read. Every ``unblindedReadNodule`` has an id (local to
that reader), rated ``characteristics`` (subtlety, internalStructure, calcification, sphericity,
margin, lobulation, spiculation, texture, malignancy; absent for nodules < 3 mm) and one ``roi``
per slice: the slice's ``imageSOP_UID`` and ``imageZposition``, an ``inclusion`` flag and the
contour as ``edgeMap`` pixel points (x = column, y = row).

Readers drew the outline on the first pixels *outside* the nodule (Armato et al., Med Phys 38:915, 2011;
McNitt-Gray et al., Acad Radiol 14:1464, 2007). :func:`lidc_reader_masks` and :attr:`Mark.mask` keep those
outline pixels with the filled interior (``skimage.draw.polygon``); :attr:`Mark.interior` leaves them out, as
the convention and pylidc's ``Annotation.boolean_mask`` (``include_contour_points=False`` by default) do.
An ``inclusion = FALSE`` ROI outlines a hole: its interior is removed from the slice's union of inclusion
ROIs (its outline pixels, nodule tissue by the same convention, stay). ROIs are placed on the loaded
slices by SOP Instance UID, falling back to the z position when the UID is not among the slices
(:func:`reader_marks` ``by_z=False`` turns the fallback off). Each reader's nodule is rasterised inside its
own bounding box (:class:`Mark`), so a whole series with many marks needs little memory;
:func:`lidc_reader_masks` and :func:`consensus_nodules` give the masks on the whole image grid.
"""

from __future__ import annotations

import math
import re
from itertools import chain, repeat
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


_EDGE_POINT = re.compile(rb"<edgeMap>[ \t\r\n]*<xCoord>[ \t\r\n]*([0-9]+)[ \t\r\n]*</xCoord>[ \t\r\n]*"
                         rb"<yCoord>[ \t\r\n]*([0-9]+)[ \t\r\n]*</yCoord>[ \t\r\n]*</edgeMap>")
"""One contour point written the usual way: unprefixed tags, plain digits, whitespace only between them."""
_TEXT_POINT = re.compile(r"([0-9]+),([0-9]+)")
_ONLY_POINTS = re.compile(r"\s*(?:[0-9]+,[0-9]+\s+)*")


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

    Notes
    -----
    A series' XML holds about 10^4 contour points, each an ``edgeMap`` element with an ``xCoord`` and a
    ``yCoord`` child; building those 3·10^4 elements was most of the parsing time (11 of 14 ms for a 400 kB
    file). Before parsing, every point written in that usual form (:data:`_EDGE_POINT`) is therefore replaced
    in the bytes by the text ``x,y`` at the same place inside its ``roi``, where :func:`_roi` reads it back in
    document order together with any ``edgeMap`` written otherwise (a namespace prefix, a comment, a character
    reference, a sign), which stays an element. The parser still checks the whole document; the schema of an
    ``roi`` allows no text of its own, so the text there is the points.
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(path, "file")
    try:
        root = ET.fromstring(_points_as_text(path.read_bytes()))
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


def _points_as_text(document: bytes) -> bytes:
    """``document`` with each usual ``edgeMap`` (:data:`_EDGE_POINT`) replaced by the text ``x,y ``.

    ``re.split`` and ``join`` instead of ``re.sub`` with a template, which Python 3.11 expands in Python for
    each of the 10^4 matches (3 of the 4 ms).
    """
    parts = _EDGE_POINT.split(document)  # text, x, y, text, x, y, ..., text
    if len(parts) == 1:
        return document
    n = len(parts) // 3
    return b"".join(chain.from_iterable(zip(parts[0::3], parts[1::3], repeat(b",", n), parts[2::3],
                                            repeat(b" ", n)))) + parts[-1]


def _roi(element: ET.Element) -> Roi:
    """One ``roi``: its points in document order, from the ``x,y`` text that :func:`_points_as_text` left for
    each usual ``edgeMap`` and from the ``edgeMap`` elements written otherwise."""
    texts = [element.text or ""]
    unusual = False
    first: dict[str, ET.Element] = {}  # the first child of each name, as _text reads it
    for child in element:
        name = _local(child.tag)
        first.setdefault(name, child)
        unusual = unusual or name == "edgeMap"
        texts.append(child.tail or "")
    if unusual:
        points = _points_in_order(element)
    else:
        text = "".join(texts)
        if _ONLY_POINTS.fullmatch(text):
            points = np.array(text.replace(",", " ").split(), dtype=np.int64)
        else:  # text of its own in an roi, which the schema does not allow: only the points are read
            points = np.array(_TEXT_POINT.findall(text), dtype=np.int64)

    def text(name: str, default: str = "") -> str:
        child = first.get(name)
        return child.text.strip() if child is not None and child.text else default

    return Roi(sop_uid=text("imageSOP_UID"), z=float(text("imageZposition")),
               inclusion=text("inclusion", "TRUE").upper() == "TRUE", points=points.reshape(-1, 2))


def _points_in_order(element: ET.Element) -> np.ndarray:
    """``(N, 2)`` points of an ``roi`` that still has ``edgeMap`` elements, in document order with its text."""
    xs: list[str] = []
    ys: list[str] = []

    def from_text(text: str | None) -> None:
        for x, y in _TEXT_POINT.findall(text or ""):
            xs.append(x)
            ys.append(y)

    from_text(element.text)
    for child in element:
        if _local(child.tag) == "edgeMap":
            x = y = None
            for coord in child:
                name = _local(coord.tag)
                if name == "xCoord":
                    x = coord.text
                elif name == "yCoord":
                    y = coord.text
            xs.append(x.strip() if x else "")
            ys.append(y.strip() if y else "")
        from_text(child.tail)
    return np.column_stack([np.array([int(x) for x in xs], dtype=np.int64),
                            np.array([int(y) for y in ys], dtype=np.int64)]).reshape(-1, 2)


def _slice_index(image: MedImage) -> tuple[dict[str, int], np.ndarray]:
    sop_uids = image.meta.get("sop_uids")
    positions = image.meta.get("slice_positions")
    if not sop_uids or not positions or len(sop_uids) != image.shape[0]:
        raise GeometryError(
            f"{image.source}: LIDC contours need a DICOM series read by read_dicom "
            "(meta 'sop_uids' and 'slice_positions' per slice)"
        )
    return {u: i for i, u in enumerate(sop_uids)}, np.array([p[2] for p in positions])


@dataclass
class Mark:
    """One reader's nodule rasterised inside its own bounding box (memory stays small on a whole series).

    ``mask[k, r, c]`` is voxel ``(origin[0] + k, origin[1] + r, origin[2] + c)`` of the image.
    """

    reader: int
    nodule_id: str
    malignancy: int | None
    characteristics: dict[str, int]
    origin: tuple[int, int, int]
    mask: np.ndarray
    unplaced: list[Roi] = field(default_factory=list)
    """ROIs whose slice is not among the image's slices (by SOP Instance UID, or by z when allowed)."""
    interior: np.ndarray | None = None
    """Like ``mask`` without the outline pixels: the voxels strictly inside the reader's outlines (holes removed),
    the nodule itself by the LIDC convention that the outline lies on the first voxels outside it."""

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The mask on the whole image grid ``shape``."""
        out = np.zeros(shape, dtype=bool)
        out[_box(self.origin, self.mask.shape)] = self.mask
        return out


def _box(origin: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(o, o + n) for o, n in zip(origin, shape))


def _place(nodule: Nodule, by_uid: dict[str, int], z: np.ndarray, by_z: bool) -> tuple[list[tuple[int, Roi]], list[Roi]]:
    """The slice index of each ROI (by SOP Instance UID, else by z within ``Z_TOLERANCE_MM`` when ``by_z``)."""
    placed, unplaced = [], []
    for roi in nodule.rois:
        k = by_uid.get(roi.sop_uid)
        if k is None and by_z:
            near = int(np.argmin(np.abs(z - roi.z)))
            k = near if abs(z[near] - roi.z) <= Z_TOLERANCE_MM else None
        if k is None:
            unplaced.append(roi)
        else:
            placed.append((k, roi))
    return placed, unplaced


def _rasterise(nodule: Nodule, reader: int, shape: tuple[int, int, int], by_uid: dict[str, int], z: np.ndarray,
               by_z: bool = True) -> Mark:
    """The nodule's mask inside the bounding box of its contour points that lie on the image."""
    placed, unplaced = _place(nodule, by_uid, z, by_z)
    points = [(k, roi.points) for k, roi in placed if len(roi.points)]
    if not points:
        return Mark(reader, nodule.nodule_id, nodule.malignancy, nodule.characteristics, (0, 0, 0),
                    np.zeros((0, 0, 0), bool), unplaced, np.zeros((0, 0, 0), bool))
    ks = [k for k, _ in points]
    # the fill clipped to the image lies in the box of the points clamped to the image
    every = np.clip(np.concatenate([p for _, p in points]), 0, [shape[2] - 1, shape[1] - 1])
    origin = (min(ks), int(every[:, 1].min()), int(every[:, 0].min()))
    size = (max(ks) - origin[0] + 1, int(every[:, 1].max()) - origin[1] + 1, int(every[:, 0].max()) - origin[2] + 1)
    mask = np.zeros(size, dtype=bool)
    interior = np.zeros(size, dtype=bool)
    holes = np.zeros(size, dtype=bool)
    for k, roi in placed:
        xs, ys = roi.points[:, 0], roi.points[:, 1]
        on = (ys >= 0) & (ys < shape[1]) & (xs >= 0) & (xs < shape[2])
        rr, cc = polygon(ys - origin[1], xs - origin[2], shape=size[1:])
        rows, cols = ys[on] - origin[1], xs[on] - origin[2]
        inside = np.zeros(size[1:], dtype=bool)
        inside[rr, cc] = True
        inside[rows, cols] = False
        if roi.inclusion:
            mask[k - origin[0], rr, cc] = True
            mask[k - origin[0], rows, cols] = True
            interior[k - origin[0]] |= inside
        else:
            holes[k - origin[0]] |= inside
    return Mark(reader, nodule.nodule_id, nodule.malignancy, nodule.characteristics, origin, mask & ~holes,
                unplaced, interior & ~holes)


def reader_marks(xml_path: str | Path, image: MedImage, *, by_z: bool = True,
                 sessions: list[ReaderSession] | None = None) -> list[Mark]:
    """Every reader's nodule as a :class:`Mark` (a mask in its own box) on the slices of ``image``.

    Parameters
    ----------
    xml_path : str or Path
        The series' LIDC XML (parsed unless ``sessions`` is given).
    image : MedImage
        The series read by :func:`~medlens.data.readers.dicom.read_dicom`.
    by_z : bool
        Place an ROI whose SOP Instance UID is not among the slices by its z position instead
        (within ``Z_TOLERANCE_MM``). The archive builder matches by UID only.
    sessions : list of ReaderSession, optional
        The already parsed XML.

    Returns
    -------
    list of Mark
        In reader then nodule order, including marks with no voxel on the image (empty ``mask``),
        whose ROIs are all in ``unplaced``.
    """
    if len(image.shape) != 3:
        raise GeometryError(f"{image.source}: LIDC masks need a volume, got spatial shape {image.shape}")
    by_uid, z = _slice_index(image)
    sessions = read_lidc_xml(xml_path) if sessions is None else sessions
    return [_rasterise(nodule, session.index, image.shape, by_uid, z, by_z)
            for session in sessions for nodule in session.nodules]


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
    return [ReaderNodule(m.reader, m.nodule_id, m.malignancy, m.characteristics, m.full(image.shape))
            for m in reader_marks(xml_path, image) if m.mask.any()]


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


@dataclass
class LesionGroup:
    """One lesion from :func:`group_marks`: its marks and the 50 % consensus inside their joint box."""

    marks: list[Mark]
    origin: tuple[int, int, int]
    consensus: np.ndarray
    """Boolean, box-local: voxels marked by at least ``⌈n/2⌉`` of the ``n`` readers (the union where none is)."""

    @property
    def readers(self) -> list[int]:
        return sorted({m.reader for m in self.marks})

    @property
    def members(self) -> list[tuple[int, str]]:
        return [(m.reader, m.nodule_id) for m in self.marks]

    @property
    def malignancy(self) -> list[int]:
        """One rating per reader who rated the lesion (the last of a reader's merged marks), by reader."""
        ratings = {m.reader: m.malignancy for m in self.marks if m.malignancy is not None}
        return [ratings[k] for k in sorted(ratings)]

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        out[_box(self.origin, self.consensus.shape)] = self.consensus
        return out


def _overlap(a: Mark, b: Mark) -> bool:
    lo = [max(p, q) for p, q in zip(a.origin, b.origin)]
    hi = [min(p + n, q + m) for p, n, q, m in zip(a.origin, a.mask.shape, b.origin, b.mask.shape)]
    if any(h <= low for low, h in zip(lo, hi)):
        return False
    sa = tuple(slice(low - o, h - o) for low, h, o in zip(lo, hi, a.origin))
    sb = tuple(slice(low - o, h - o) for low, h, o in zip(lo, hi, b.origin))
    return bool((a.mask[sa] & b.mask[sb]).any())


def group_marks(marks: list[Mark], level: float = 0.5, outline: bool = True) -> list[LesionGroup]:
    """Group overlapping marks into lesions with their consensus mask, largest agreement first.

    Reader masks that overlap are taken to outline the same lesion (pylidc's annotation clustering;
    one reader's overlapping masks are merged into one). Each cluster's consensus keeps the voxels
    that at least ``max(1, ⌈level·n⌉)`` of its ``n`` readers mark: ``level = 0.5`` is the 50 % consensus
    of LIDC studies (``⌈n/2⌉``), a level at or below ``1/n`` the union of the readers. Where a chain of
    pairwise overlaps leaves no voxel with that many votes, the union is kept instead.
    ``outline=False`` votes with each reader's :attr:`Mark.interior` (outline pixels left out) instead of its
    mask; the lesions are grouped alike. A lesion so small that no outline of it encloses a voxel then keeps
    the vote of the masks with their outlines.
    Sorted by the number of readers (descending), then by consensus volume (descending).
    """
    marks = [m for m in marks if m.mask.any()]
    cluster = list(range(len(marks)))  # union-find over overlapping masks

    def root(i: int) -> int:
        while cluster[i] != i:
            cluster[i] = cluster[cluster[i]]
            i = cluster[i]
        return i

    for i in range(len(marks)):
        for j in range(i):
            if _overlap(marks[i], marks[j]):
                cluster[root(i)] = root(j)
    out = []
    for r in sorted({root(i) for i in range(len(marks))}):
        members = [m for i, m in enumerate(marks) if root(i) == r]
        origin = tuple(min(m.origin[a] for m in members) for a in range(3))
        size = tuple(max(m.origin[a] + m.mask.shape[a] for m in members) - origin[a] for a in range(3))
        consensus = None if outline else _consensus(members, origin, size, level, "interior")
        if consensus is None or not consensus.any():
            consensus = _consensus(members, origin, size, level, "mask")
        out.append(LesionGroup(members, origin, consensus))
    return sorted(out, key=lambda g: (-len(g.readers), -int(g.consensus.sum())))


def _consensus(members: list[Mark], origin: tuple[int, ...], size: tuple[int, ...], level: float,
               which: str) -> np.ndarray:
    """Box-local voxels that ``max(1, ⌈level·n⌉)`` of the ``n`` readers mark (each reader's marks merged), with
    ``which`` (``"mask"`` or ``"interior"``) of each :class:`Mark`; their union where none has that many."""
    by_reader: dict[int, np.ndarray] = {}
    for m in members:
        placed = by_reader.setdefault(m.reader, np.zeros(size, dtype=bool))
        placed[_box(tuple(o - g for o, g in zip(m.origin, origin)), m.mask.shape)] |= getattr(m, which)
    votes = np.sum(list(by_reader.values()), axis=0)
    consensus = votes >= max(1, math.ceil(level * len(by_reader)))
    return consensus if consensus.any() else votes > 0


def consensus_nodules(xml_path: str | Path, image: MedImage) -> list[ConsensusNodule]:
    """The lesions of ``image`` with their 50 % consensus masks, largest agreement first.

    The grouping and consensus of :func:`group_marks`, with each mask on the whole image grid.

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
    return [ConsensusNodule(g.readers, g.members, g.malignancy, g.full(image.shape))
            for g in group_marks(reader_marks(xml_path, image))]


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
