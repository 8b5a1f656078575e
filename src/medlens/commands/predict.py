"""``medlens predict``: apply a trained bundle to image files."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import typer

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.errors import ConfigError
from medlens.files import claim_output, csv_text, write_csv_atomically

FEW_INPUTS = 4


@reports_errors
def predict(
    bundle: Path = typer.Argument(..., help="Bundle folder written by `medlens train`."),
    inputs: list[Path] = typer.Argument(None, help="2D bundles: pictures (PNG, JPEG, BMP, TIFF) and .npz archives. "
                                               "3D lesion bundles: DICOM series folders or files, NIfTI volumes."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV file to write. Default: print the table. With --pacs: "
                                                       "the folder for seg.dcm, sr.dcm, findings.csv and run.json "
                                                       "(default `runs/pacs-<date-time>`)."),
    explain: Path = typer.Option(None, "--explain", help="Folder for heat-map overlay PNGs (bundles whose model "
                                                          "can be explained; the manifest's capabilities say how)."),
    method: str = typer.Option(None, "--method", help="Map for --explain: gradcam, gradcam++ or occlusion. "
                                                      "Default: the first the model supports."),
    strict: bool = typer.Option(False, "--strict", help="Refuse (error row, no probability) every image unlike "
                                                        "the training images instead of only flagging it."),
    at: str = typer.Option(None, "--at", help="3D: lesion position 'z,y,x' in voxels of the volume as "
                                               "`medlens inspect` shows it (models that need no mask)."),
    mask: Path = typer.Option(None, "--mask", help="3D: lesion mask (NIfTI or .npy) in the volume's geometry."),
    xml: Path = typer.Option(None, "--xml", help="3D: LIDC reader XML; one row per rated nodule with its 50% "
                                                 "consensus mask. Default: the .xml beside a DICOM series."),
    pacs: str = typer.Option(None, "--pacs", help="Take the series from this PACS instead of INPUT files: "
                                                   "`http://host:port/dicom-web` or `dimse://AET@host:port`."),
    study: str = typer.Option(None, "--study", help="With --pacs: the StudyInstanceUID."),
    series: str = typer.Option(None, "--series", help="With --pacs: the SeriesInstanceUID (default the study's "
                                                     "largest series of the bundle's modality)."),
    segmenter: Path = typer.Option(None, "--segmenter", help="With --pacs: a segmentation bundle (`medlens segment "
                                                            "train`): its mask becomes a DICOM SEG and, without --at, "
                                                            "each connected component one nodule of the SR."),
    push: bool = typer.Option(False, "--push", help="With --pacs: store the SEG and SR in the PACS, then check "
                                                    "that they arrived."),
    push_to: str = typer.Option(None, "--push-to", help="With --pacs: push to this PACS instead (implies --push)."),
    min_diameter: float = typer.Option(3.0, "--min-diameter", help="With --pacs: leave out components whose "
                                                                   "longest axial diameter is smaller (mm)."),
    segment_name: list[str] = typer.Option(None, "--segment-name", help="With --pacs: name of each class of the "
                                                                        "segmentation (e.g. nodule, lung) when its "
                                                                        "plan names none."),
    aet: str = typer.Option("MEDLENS", "--aet", help="With a DIMSE --pacs: medlens's own AE title."),
    move_port: int = typer.Option(None, "--move-port", help="With a DIMSE --pacs: retrieve by C-MOVE to this "
                                                            "port (default C-GET)."),
    keep_identifiers: bool = typer.Option(False, "--keep-identifiers", help="Write the DICOM PatientID in the "
                                          "patient_id column (default: empty; patient_pseudonym holds a keyed "
                                          "pseudonym, see `medlens inspect --help`). With --pacs: the patient's ID, "
                                          "name and birth date in findings.csv and run.json."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict every image of the inputs with a bundle: one CSV row per image.

    Columns: path, index (image within the file), patient_id (only with --keep-identifiers),
    patient_pseudonym and series_uid (DICOM), roi (the lesion of a volume), `p_<label>` per class, label, threshold, out_of_distribution (why an image looks unlike the
    training images; --strict refuses such images), error. Each image is prepared like the training data
    (scaled to [0, 1] by its declared range, grayscale, resized to the bundle's size); an image with NaN
    or infinite values, or a float image outside [0, 1], is refused in its row. A file that cannot be
    read gets its error in its row and the rest still run. With --explain, a heat-map overlay per image
    is written as `<stem>_<index>.png` (--method: Grad-CAM, Grad-CAM++ or occlusion sensitivity, as the
    model supports; volumes show the axial, coronal and sagittal slices through the map's maximum); a
    model that cannot be explained is an error before anything runs.
    Example: `medlens predict bundles/breast scan1.png scans.npz --out preds.csv --explain cams/`.

    3D lesion bundles (trained on the LIDC nodule cubes) read raw CT in HU and find the lesion by
    --mask, --at or an LIDC XML (the one beside a series folder by default): one row per lesion,
    with the lesion in the roi column, cut and resampled as in training.
    Example: `medlens predict bundles/nodules LIDC-IDRI-0001/<study>/<series>/ --out preds.csv`.

    From a PACS (`medlens pacs --help`): the study's series is pulled into a private temporary folder and
    checked, the bundles run on it, the results are written as a DICOM SEG (the segmentation) and a DICOM SR
    (TID 1500: each nodule's location, diameter, probability of malignancy, threshold and model), validated
    with dciodvfy and highdicom, and with --push stored beside the study.
    Example: `medlens predict bundles/nodules --segmenter bundles/nodule-seg --pacs http://localhost:8042/dicom-web --study 1.2.3.4 --push --out results/`.
    """
    if pacs is not None or study is not None:
        from medlens.commands.pacs import predict_on_pacs

        if pacs is None or study is None or inputs:
            raise ConfigError("--pacs URL and --study UID go together, without INPUT files")
        return predict_on_pacs(bundle, pacs, study, segmenter=segmenter, series=series, at=at, push=push,
                               push_to=push_to, out=out, min_diameter=min_diameter, segment_names=segment_name,
                               aet=aet, move_port=move_port, keep_identifiers=keep_identifiers,
                               quiet=quiet_requested(quiet))
    if not inputs:
        raise ConfigError("give INPUT files, or --pacs URL --study UID")
    import torch

    from medlens.deploy.classifier import load_classifier
    from medlens.deploy.explain import METHODS
    from medlens.deploy.predict import predict_files
    from medlens.deploy.predict_volume import LesionSelection, parse_position
    from medlens.engine.threads import torch_threads
    from medlens.progress import progress_bar

    quiet = quiet_requested(quiet)
    if method is not None and method not in METHODS:
        raise ConfigError(f"--method: unknown {method!r}; choose one of {', '.join(METHODS)}")
    selection = LesionSelection(at=parse_position(at) if at else None, mask=mask, xml=xml)
    loaded = load_classifier(bundle)
    if explain is not None:
        supported = loaded.capabilities.explain
        if not supported:
            raise ConfigError(f"--explain: the {loaded.model.name} model of {bundle} cannot be explained by a map "
                              "over the image (it reads features measured outside the image); drop --explain")
        method = method or supported[0]
        if method not in supported:
            raise ConfigError(f"--method {method}: the {loaded.model.name} model of {bundle} supports "
                              f"{', '.join(supported)}")
    # a few inputs: one thread, which a busy machine cannot stall (two threads waiting on each other took
    # 0.5 s instead of 5 ms per image under load; benchmarks/results/predict.md)
    threads = 1 if len(inputs) <= FEW_INPUTS else torch.get_num_threads()
    read = [bundle, *inputs, *(p for p in (mask, xml) if p is not None)]
    with ExitStack() as claims:
        if out is not None:
            claims.enter_context(claim_output(out, kind="file", inputs=read))
        if explain is not None:
            claims.enter_context(claim_output(explain, kind="folder", inputs=read))
        with torch_threads(threads), progress_bar(len(inputs), "predict",
                                                  disable=quiet or len(inputs) < 5) as advance_for:
            table, prepared = predict_files(loaded, inputs, advance=advance_for("files"), selection=selection,
                                            strict=strict, keep_identifiers=keep_identifiers)
            table["index"] = table["index"].astype("Int64")
            if explain is not None:
                _write_explanations(loaded, prepared, table, explain, method)
        if out is not None:
            write_csv_atomically(out, table)
            console.print(f"wrote {out}: {len(table)} rows, {int(table['error'].notna().sum())} errors",
                          highlight=False)
        else:
            typer.echo(csv_text(table))


def _write_explanations(loaded, prepared, table, folder: Path, method: str) -> None:
    from medlens.deploy.explain import explain, write_overlay
    from medlens.deploy.predict import prepared_dataset

    labels = table.dropna(subset=["index"]).set_index(["path", "index"])["label"]
    for item in prepared:
        if item.error is not None:
            continue
        options = {"context": prepared_dataset(loaded, item.images, item.features)} if method == "occlusion" else {}
        maps = explain(loaded.model, item.images, method, **options)
        for i, (image, heat) in enumerate(zip(item.images, maps)):
            write_overlay(image, heat, folder / f"{item.path.stem}_{i}.png",
                          title=f"{item.path.name}[{i}]: {labels[(str(item.path), i)]} ({method})")
