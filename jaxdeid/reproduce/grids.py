"""Tables 2 and 4 of the paper: image grids of low-light inputs, de-identified faces and private outputs.

    python -m jaxdeid.reproduce.grids --preset small           # trains what is missing, evaluates, writes results/

  results/table2_grid.png   ours: rows low-light input frame / de-identified face before attenuation
                            (the generator's normal-light output) / private output frame
  results/table4_grid.png   the same low-light inputs, then for each baseline (PGGAN, StyleGAN1, StyleGAN2)
                            its de-identified face and its private output frame (baselines have no
                            attenuation, so their de-identified face is the released face)
  results/grids.md          what the rows are, which columns failed
  results/grids.json        the images written and, per method, success over the shown columns

Columns are the first ``--columns`` evaluation scenes. A red frame marks a scene that
was NOT a success: its released frame is the step's fail-closed fallback (pixelated
face), never the original. Faces (config.data.resolution px) are shown enlarged to the
tile size; frames at config.data.scene_resolution px enlarged the same way (nearest).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jaxdeid import results
from jaxdeid.reproduce import common

LABEL_WIDTH = 150   # px of the left column holding the row labels
BORDER = 3          # px of the red frame around failed scenes
BASELINES = ("pggan", "stylegan1", "stylegan2")


def tile_size(config) -> int:
    """Side of one grid cell: the frame side enlarged to at least 128 px by an integer factor."""
    side = int(config.data.scene_resolution)
    return side * max(1, 128 // side)


def grid_size(num_rows: int, num_columns: int, tile: int) -> tuple[int, int]:
    """(width, height) in px of a grid with these rows and columns."""
    return LABEL_WIDTH + num_columns * tile, num_rows * tile


def draw_grid(path: Path, rows: list[tuple[str, np.ndarray, np.ndarray | None]], tile: int, prov: dict) -> Path:
    """rows: (label, images [C, h, w, 3] in [0, 1], failed [C] bool or None) -> PNG (provenance in its text)."""

    columns = rows[0][1].shape[0]
    canvas = Image.new("RGB", grid_size(len(rows), columns, tile), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images, failed) in enumerate(rows):
        for i, line in enumerate(label.split("\n")):
            draw.text((4, r * tile + tile // 2 - 12 + 12 * i), line, fill="black")
        for c in range(columns):
            pixels = np.round(np.clip(np.nan_to_num(images[c]), 0, 1) * 255).astype(np.uint8)
            cell = Image.fromarray(pixels).resize((tile, tile), Image.NEAREST)
            x, y = LABEL_WIDTH + c * tile, r * tile
            canvas.paste(cell, (x, y))
            if failed is not None and failed[c]:
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=(220, 0, 0), width=BORDER)
    return results.write_png(path, canvas, prov)


def grid_rows(evalset, outputs: dict, methods, columns: int) -> list:
    """The rows of a grid: the low-light inputs, then de-identified + private rows per method."""
    rows = [("low-light input", evalset.lowlight[:columns], None)]
    for m in methods:
        o = outputs[m]
        failed = ~np.asarray(o["success"][:columns], bool)
        before = "before attenuation" if m == "ours" else "(no attenuation)"
        rows.append((f"{common.DISPLAY[m]}: de-identified\n{before}", o["synthesized_faces"][:columns], failed))
        rows.append((f"{common.DISPLAY[m]}: private output", o["frames"][:columns], failed))
    return rows


def main(argv=None) -> int:
    run = common.start_evaluation(__doc__, argv, add_arguments=lambda p: p.add_argument(
        "--columns", type=int, default=8, help="scenes shown per row (default 8)"))
    args, config, out_dir = run.args, run.config, run.out_dir
    evalset, outputs = common.collect(config, args)
    columns = min(args.columns, evalset.lowlight.shape[0])
    tile = tile_size(config)
    prov = run.provenance(evalset, outputs, columns=columns)
    written, notes, shown = [], [], {}
    if "ours" in outputs:
        draw_grid(out_dir / "table2_grid.png", grid_rows(evalset, outputs, ["ours"], columns), tile, prov)
        written.append("table2_grid.png")
    baselines = [m for m in BASELINES if m in outputs]
    if baselines:
        draw_grid(out_dir / "table4_grid.png", grid_rows(evalset, outputs, baselines, columns), tile, prov)
        written.append("table4_grid.png")
    for m, o in outputs.items():
        failed = [int(i) for i in np.flatnonzero(~np.asarray(o["success"][:columns], bool))]
        shown[m] = {"success": float(np.mean(o["success"][:columns])), "failed_columns": failed}
        notes.append(f"| {common.DISPLAY[m]} | {shown[m]['success']:.3f} | "
                     f"{', '.join(map(str, failed)) or 'none'} |")
    body = f"""# Tables 2 and 4: low-light inputs, de-identified faces, private outputs

{common.untrained_note(outputs)}
The first {columns} low-light SynthFaces test scenes (preset `{config.preset}`, {config.data.scene_resolution} px
frames, {config.data.resolution} px faces), each cell enlarged to {tile} px (nearest neighbour).

* `table2_grid.png` (paper Table 2, ours): low-light input frame; the de-identified face **before attenuation** (the
  StyleGAN2 output in normal light, taken from the step's `synthesized_faces` diagnostic); the private output frame
  (attenuated face pasted back into the low-light frame).
* `table4_grid.png` (paper Table 4, baselines): the same low-light inputs, then for each baseline its de-identified
  face and its private output frame. Baselines run without light networks (docs/method.md §4.5), so their de-identified face
  is also the face they release.

A red frame marks a scene that failed (not detected, not valid, or still recognised at the iteration cap); its
private output is the fail-closed pixelated fallback, which is what the pipeline releases.

| method | success (shown columns) | failed columns (0-based) |
|---|---|---|
{chr(10).join(notes)}

![Table 2](table2_grid.png)

![Table 4](table4_grid.png)
"""
    results.write_markdown(out_dir / "grids.md", body, prov)
    results.write_json(out_dir / "grids.json", {"images": written, "shown": shown, "provenance": prov})
    print(f"wrote {', '.join(str(out_dir / w) for w in written)}, grids.md and grids.json in {run.elapsed():.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
