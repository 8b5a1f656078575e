"""A PACS in and out: studies pulled over DICOMweb or DIMSE and checked, bundles run on them, results written
as DICOM SEG and SR (highdicom), validated, and pushed back.

Modules, in the order a run uses them: :mod:`~medlens.pacs.address` (the URL), :mod:`~medlens.pacs.client`
(:func:`~medlens.pacs.client.connect`; :mod:`~medlens.pacs.dicomweb`, :mod:`~medlens.pacs.dimse`),
:mod:`~medlens.pacs.pull`, :mod:`~medlens.pacs.models` (the only user of bundles), :mod:`~medlens.pacs.lesions`,
:mod:`~medlens.pacs.seg`, :mod:`~medlens.pacs.sr`, :mod:`~medlens.pacs.validate`, :mod:`~medlens.pacs.push`
and :mod:`~medlens.pacs.run` (``medlens predict --pacs``). Patients are named outside DICOM objects by the
pseudonyms of :mod:`medlens.data.identifiers`.
"""
