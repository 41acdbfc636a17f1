"""`jaxdeid weights list|export|verify`: the store of trained weights that ships with the package.

    jaxdeid weights list --preset small                 # every network: shipped / local checkpoint / missing
    jaxdeid weights export light_enhance --preset small # runs/small/light_enhance checkpoint -> the store
    jaxdeid weights verify --preset small               # sha256, header, shapes and fingerprint of every file

Export measures what it ships: the validation figure of the network on its *stored*
(16-bit) weights, and the max/mean error of the stored network's outputs against
float32 on a fixed probe batch. It refuses to replace a shipped network whose figure
is better unless ``--force``.
"""

from __future__ import annotations

import json
import time

from .common import EXIT_FAILED, EXIT_OK, add_config_flags, config_from_args
from ..components import entry_by_name, store_entries
from ..store import PRESET_BUDGET_BYTES, StoreError, read_manifest, store_bytes, store_dir
from ..weights import export_entry, status_rows, verify_entry


def register(subparsers):
    p = subparsers.add_parser("weights", help="the shipped trained weights: list, export, verify")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = sub.add_parser("list", help="every network of a preset: shipped / local checkpoint / missing, figure vs target")
    add_config_flags(q)
    q.add_argument("--json", action="store_true", help="print the table as JSON")
    q.set_defaults(func=list_command)
    q = sub.add_parser("export", help="copy a trained checkpoint from the workdir into the store (16-bit)")
    add_config_flags(q)
    q.add_argument("names", nargs="+", metavar="NETWORK", help="store names, e.g. light_enhance crop gan_stylegan2")
    q.add_argument("--force", action="store_true", help="replace a shipped network even if its figure is better")
    q.add_argument("--device", default=None,
                   help="the device the network was trained on (default: this machine's)")
    q.set_defaults(func=export_command)
    q = sub.add_parser("verify", help="check every shipped file against the manifest and this config")
    add_config_flags(q)
    q.set_defaults(func=verify_command)


def list_command(args) -> int:
    config = config_from_args(args)
    rows = status_rows(config)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    directory = store_dir(config)
    print(f"{config.preset} store: {directory} ({store_bytes(directory) / 2**20:.1f} MiB shipped of "
          f"{PRESET_BUDGET_BYTES / 2**20:.0f} MiB; all {len(rows)} networks as {config.weights_codec}: "
          f"{sum(r['bytes'] for r in rows) / 2**20:.1f} MiB)")
    header = f"{'network':<28}{'status':<18}{'steps':>13}{'params':>12}{'MiB':>8}  figure vs target"
    print(header)
    print("-" * len(header))
    for r in rows:
        steps = f"{r['steps']['done']}/{r['steps']['planned']}"
        fig = "—" if r["figure"] is None else f"{r['figure']:.3f}"
        target = "—" if r["target"] is None else f"{r['target']:.2f}"
        name = f"{r['figure_name']} {fig} vs {target}" if r["figure_name"] else "measured by jaxdeid.reproduce.generators"
        print(f"{r['network']:<28}{r['status']:<18}{steps:>13}{r['parameters']:>12,}{r['bytes'] / 2**20:>8.2f}  {name}")
    return EXIT_OK


def export_command(args) -> int:
    config = config_from_args(args)
    failed = 0
    for name in args.names:
        start = time.perf_counter()
        try:
            record = export_entry(entry_by_name(config, name), force=args.force, device=args.device)
        except (FileNotFoundError, ValueError) as err:
            print(f"export {name}: error: {err}")
            failed += 1
            continue
        fig = record.get("figure") or {}
        print(f"export {name}: {record['parameters']:,} parameters, {sum(f['bytes'] for f in record['files']):,} "
              f"bytes in {len(record['files'])} file(s), steps {record['steps']['done']}/{record['steps']['planned']}, "
              f"{fig.get('name', 'figure')} {fig.get('value')}, storage error max {record['storage_error']['max_abs']:.2e} "
              f"({time.perf_counter() - start:.1f} s)")
    return EXIT_FAILED if failed else EXIT_OK


def verify_command(args) -> int:
    config = config_from_args(args)
    directory = store_dir(config)
    manifest = read_manifest(directory).get("networks", {})
    entries = {e.name: e for e in store_entries(config)}
    failed = 0
    for name in manifest:
        try:
            if name not in entries:
                raise StoreError(f"{name}: in the manifest but not a network of the {config.preset} preset")
            record = verify_entry(entries[name])
            print(f"ok      {name} ({', '.join(f['file'] for f in record['files'])})")
        except StoreError as err:
            print(f"FAILED  {err}")
            failed += 1
    total = store_bytes(directory) if directory is not None else 0
    over_budget = total > PRESET_BUDGET_BYTES
    if over_budget:
        print(f"FAILED  the store takes {total / 2**20:.1f} MiB, over its {PRESET_BUDGET_BYTES / 2**20:.0f} MiB budget")
    print(f"{len(manifest) - failed} of {len(manifest)} shipped networks verified; "
          f"{total / 2**20:.2f} MiB of {PRESET_BUDGET_BYTES / 2**20:.0f} MiB")
    return EXIT_FAILED if failed or over_budget else EXIT_OK
