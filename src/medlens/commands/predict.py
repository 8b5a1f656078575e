"""``medlens predict``: apply a trained bundle to image files."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.commands._common import console, quiet_requested, reports_errors


@reports_errors
def predict(
    bundle: Path = typer.Argument(..., help="Bundle folder written by `medlens train`."),
    inputs: list[Path] = typer.Argument(..., help="Pictures (PNG, JPEG, BMP, TIFF) and/or .npz archives."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV file to write. Default: print the table."),
    explain: Path = typer.Option(None, "--explain", help="Folder for Grad-CAM overlay PNGs (cnn bundles)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict every image of the inputs with a bundle: one CSV row per image.

    Columns: path, index (image within the file), p_<label> per class, label, threshold, error. Each
    image is prepared like the training data (scaled to [0, 1], grayscale, resized to the bundle's
    size). A file that cannot be read gets its error in its row and the rest still run. With
    --explain, a Grad-CAM overlay per image is written as <stem>_<index>.png.
    Example: `medlens predict bundles/breast scan1.png scans.npz --out preds.csv --explain cams/`.
    """
    from medlens.bundle import load_bundle
    from medlens.predict import predict_files
    from medlens.progress import progress_bar

    quiet = quiet_requested(quiet)
    loaded = load_bundle(bundle)
    if explain is not None and loaded.manifest["model"]["name"] != "cnn":
        console.print("[yellow]--explain:[/] Grad-CAM needs a cnn bundle; no overlays written", highlight=False)
        explain = None
    with progress_bar(len(inputs), "predict", disable=quiet or len(inputs) < 5) as advance_for:
        table, prepared = predict_files(loaded, inputs, advance=advance_for("files"))
    table["index"] = table["index"].astype("Int64")
    if explain is not None:
        _write_explanations(loaded, prepared, table, explain)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        console.print(f"wrote {out}: {len(table)} rows, {int(table['error'].notna().sum())} errors", highlight=False)
    else:
        typer.echo(table.to_csv(index=False))


def _write_explanations(loaded, prepared, table, folder: Path) -> None:
    from medlens.explain import grad_cam, write_overlay

    labels = table.dropna(subset=["index"]).set_index(["path", "index"])["label"]
    for item in prepared:
        if item.error is not None:
            continue
        maps = grad_cam(loaded.model, item.images)
        for i, (image, heat) in enumerate(zip(item.images, maps)):
            write_overlay(image, heat, folder / f"{item.path.stem}_{i}.png",
                          title=f"{item.path.name}[{i}]: {labels[(str(item.path), i)]}")
