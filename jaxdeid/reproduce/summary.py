"""Writes results/README.md: every paper table and figure beside ours, from the JSON files.

Nothing here is typed by hand except the paper's printed values (docs/method.md §3); our
numbers are read from the JSON files the reproduce scripts wrote, with each
file's preset, device and commit, so a stale or missing file is visible.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jaxdeid.configs import get_config
from jaxdeid.results import markdown_table, provenance, write_markdown

PAPER_TABLE1 = {  # train acc, test acc, TPR, FPR
    "vgg16": (0.982, 0.951, 0.938, 0.081), "resnet50": (0.990, 0.979, 0.973, 0.062),
    "mobilenetv3": (0.999, 0.987, 0.997, 0.031), "senet50": (0.975, 0.960, 0.917, 0.172)}
PAPER_TABLE3 = {"vgg16": (0.148, 0.850), "resnet50": (0.145, 0.887), "mobilenetv3": (0.119, 0.815),
                "senet50": (0.103, 0.854)}
PAPER_FIG6 = {"ours": 1.0, "pggan": 0.429, "stylegan1": 0.462, "stylegan2": 0.683}
PAPER_LIGHT = {"enhance": 0.091, "attenuate": 0.121}


def _load(results: Path, name: str):
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def _origin(data) -> str:
    p = data.get("provenance", {})
    commit = str(p.get("git_commit"))
    # A run from before commits were recorded on the GPU machine says so in words.
    sha, plus, suffix = commit.partition("+")       # keep a +dirty / +mismatch mark visible
    commit = "not recorded" if commit == "unknown" else f"`{sha[:12]}{plus}{suffix}`"
    return (f"*Source:* preset `{p.get('preset')}`, {p.get('device')}, commit {commit}, "
            f"{p.get('wall_s')} s.")


def _num(v, fmt=".3f"):
    return "—" if v is None else (format(v, fmt) if isinstance(v, (int, float)) else str(v))


def _not_yet(title: str, module: str) -> str:
    return f"## {title}\n\nNot yet produced: run `python -m jaxdeid.reproduce.{module}`.\n"


def _table_section(title: str, intro: str, header: list[str], rows: list, data: dict) -> str:
    """A results/README.md section: heading, a line of context, the table, and where its numbers came from."""
    return f"## {title}\n\n" + (f"{intro}\n\n" if intro else "") + markdown_table(header, rows) + "\n\n" + \
        _origin(data) + "\n"


def _section_light(results: Path) -> str:
    d = _load(results, "light.json")
    if not d:
        return _not_yet("Light networks (paper §4.1)", "light")
    rows = [["L_E (enhancement loss)", PAPER_LIGHT["enhance"], d["enhance"]["final_loss"]],
            ["L_W (attenuation loss)", PAPER_LIGHT["attenuate"], d["attenuate"]["final_loss"]],
            ["PSNR low-light input vs normal (dB)", None, d["enhance"]["psnr_lowlight"]],
            ["PSNR enhanced vs normal (dB)", None, d["enhance"]["psnr_enhanced"]],
            ["SSIM enhanced vs normal", None, d["enhance"]["ssim_enhanced"]],
            ["attenuated / low-light luminance", None, d["attenuate"]["luminance_ratio"]],
            ["SSIM attenuated vs low-light", None, d["attenuate"]["ssim"]]]
    return ("## Light networks (paper §4.1; `results/light.md`)\n\n"
            + markdown_table(["quantity", "paper", "ours"], [[a, _num(b), _num(c)] for a, b, c in rows])
            + "\n\nThe losses are not directly comparable: the paper trains on VGGFace2 at its own resolution, "
              "we on SynthFaces at the preset's resolution, and the loss value depends on image content "
              "and on the LLNet noise level.\n\n" + _origin(d) + "\n")


def _section_table1(results: Path) -> str:
    d = _load(results, "table1.json")
    if not d:
        return _not_yet("Table 1 — recognizers on the clean test set", "table1")
    rows = []
    for arch, paper in PAPER_TABLE1.items():
        ours = d["recognizers"].get(arch, {})
        rows.append([arch] + [f"{p:.3f} / {_num(ours.get(k))}" for p, k in
                              zip(paper, ("train_acc", "test_acc", "tpr", "fpr"))] + [_num(ours.get("params"), ",")])
    return _table_section(f"Table 1 — recognizers on the clean test set (threshold {d.get('threshold')}; "
                          "`results/table1.md`)", "Each cell is *paper / ours*.",
                          ["model", "train acc", "test acc", "TPR", "FPR", "params"], rows, d)


def _section_detection(results: Path) -> str:
    d = _load(results, "detection.json")
    if not d:
        return _not_yet("Face detection under low light", "detection")
    rows = [[k, _num(d.get(k))] for k in ("normal", "lowlight", "enhanced")]
    return _table_section("Face detection under low light (the mechanism behind Fig. 6; `results/detection.json`)",
                          "The paper prints no detection rate; this measures whether enhancement restores detection.",
                          ["test scenes", "detection rate (IoU ≥ 0.5)"], rows, d)


def _section_generators(results: Path) -> str:
    d = _load(results, "generators.json")
    if not d:
        return _not_yet("Generators and encoders", "generators")
    rows = [[a, _num(d[a].get("frechet_distance")), _num(d[a].get("inversion_ssim")),
             _num(d[a].get("inversion_psnr"), ".2f"), _num(d[a].get("params"), ",")]
            for a in ("stylegan2", "stylegan1", "pggan") if a in d]
    return _table_section("Generators and encoders (`results/generators.md`; the paper prints no such numbers)",
                          "",
                          ["generator", "Fréchet distance", "inversion SSIM", "inversion PSNR", "params"], rows, d)


def _section_fig6(results: Path) -> str:
    d = _load(results, "fig6.json")
    if not d:
        return _not_yet("Figure 6 — success rate", "fig6")
    rows = [[m, f"{PAPER_FIG6[m]:.3f}", _num(d.get(m, {}).get("success")), _num(d.get(m, {}).get("detected")),
             _num(d.get(m, {}).get("valid")), _num(d.get(m, {}).get("deidentified"))] for m in PAPER_FIG6]
    return _table_section("Figure 6 — success rate of low-light private images (`results/fig6.md`)",
                          "",
                          ["method", "paper", "ours", "detected", "valid", "de-identified"], rows, d)


def _section_fig5(results: Path) -> str:
    d = _load(results, "fig5.json")
    if not d:
        return _not_yet("Figure 5 — SSIM, CS, PSNR", "fig5")
    rows = [[m, _num(v.get("ssim")), _num(v.get("cs")), _num(v.get("psnr"), ".2f")]
            for m, v in d.items() if m != "provenance"]
    return _table_section("Figure 5 — similarity of private to original images (`results/fig5.md`)",
                          "The paper prints no numbers, only that ours is highest on all three.",
                          ["method", "SSIM", "CS", "PSNR (dB)"], rows, d)


def _section_table3(results: Path) -> str:
    d = _load(results, "table3.json")
    if not d:
        return _not_yet("Table 3 — recognizers on private images", "table3")
    ours = d.get("whitebox", {}).get("ours", {})
    rows = [[r, f"{p[0]:.3f} / {p[1]:.3f}", f"{_num(ours.get(r, {}).get('tpr'))} / {_num(ours.get(r, {}).get('fpr'))}",
             f"{_num(ours.get(r, {}).get('tpr_1n'))} / {_num(ours.get(r, {}).get('fpr_1n'))}"]
            for r, p in PAPER_TABLE3.items()]
    return _table_section("Table 3 — recognizers on private images (`results/table3.md`)",
                          "",
                          ["model", "paper TPR / FPR", "ours 1:1 TPR / FPR", "ours 1:N TPR / FPR"], rows, d)


def write_summary(results: Path, preset: str, status: dict, wall_s: float) -> Path:
    t0 = time.perf_counter()
    status_rows = [[n, s["status"], s["wall_s"]] for n, s in status.items()]
    body = "\n".join([
        "# Results: the paper beside this re-implementation",
        "",
        "Generated by `jaxdeid reproduce` (`jaxdeid/reproduce/summary.py`); do not edit by hand. Each section "
        "names the preset, device and commit its numbers came from.",
        "",
        "**Scale.** The paper trains on 300,000 VGGFace2 images with full-size networks. VGGFace2 cannot be "
        "downloaded on the machines this project runs on, so these numbers come from SynthFaces, the project's "
        "procedural face data set, at the preset named in each section (docs/method.md §5). Differences from the "
        "paper are expected and are discussed per section; no number here is tuned to match the paper.",
        "",
        _section_light(results), _section_table1(results), _section_detection(results),
        _section_generators(results), _section_fig6(results), _section_fig5(results), _section_table3(results),
        "## Benchmarks\n\nSee `results/benchmarks.md` (CPU) and the GPU files `results/benchmarks_*.md`; StyleGAN2 "
        "beside stylegan2-ada-pytorch on the CPU: `results/reference_stylegan2_ada_cpu.md`.\n",
        "## This run\n\n" + markdown_table(["script", "status", "wall s"], status_rows),
    ])
    prov = provenance(preset, 0, wall_s + time.perf_counter() - t0)
    return write_markdown(results / "README.md", body, prov)


# The JSON each reproduce script writes, to rebuild the page from separate runs.
SCRIPT_OUTPUTS = {"light": "light.json", "table1": "table1.json", "detection": "detection.json",
                  "generators": "generators.json", "table3": "table3.json", "fig5": "fig5.json",
                  "fig6": "fig6.json", "grids": "grids.json"}


def main(argv=None) -> int:
    """``python -m jaxdeid.reproduce.summary --preset P``: the page from whatever the scripts wrote, run by run.

    For results produced by separate script runs (on different machines, say) rather than one
    `jaxdeid/reproduce/all.py`; the "This run" table then lists each file's own wall time and device.
    """


    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=("smoke", "small", "paper"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (e.g. results_dir=...)")
    args = parser.parse_args(argv)
    results = Path(get_config(args.preset, args.overrides).results_dir)
    status = {}
    for script, name in SCRIPT_OUTPUTS.items():
        data = _load(results, name)
        if data is None:
            status[script] = {"status": "not run", "wall_s": 0.0}
        else:
            prov = data.get("provenance", {})
            status[script] = {"status": f"separate run on {prov.get('device', '?')}", "wall_s": prov.get("wall_s")}
    write_summary(results, args.preset, status, 0.0)
    print(f"wrote {results / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
