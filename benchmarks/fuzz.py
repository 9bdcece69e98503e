"""Mutation fuzzing of edgeguard's hostile-input surface (issue 13): >= 1000 mutants, 0 defects is the target.

Runs :func:`tools.fuzz.fuzz` (structure-aware and byte-level mutants of the bundled
exported models, tiny hand-built models and probe sets; forked children under RLIMIT_AS and
a timeout) and writes benchmarks/results/fuzz.md, fuzz.json and fuzz_readme.md.

    nice -n 5 python benchmarks/fuzz.py --mutants 1000 --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

RESULTS = Path(__file__).resolve().parent / "results"


def _markdown(data: dict) -> str:
    d = data["defects"]
    lines = [
        "# Fuzzing edgeguard with hostile files (issue 13)",
        "",
        f"Generated {data['generated']} on {data['machine']['cpu']} ({data['machine']['cores']} cores, shared), "
        f"{data['seconds']} s wall, {data['settings']['workers']} forked workers.",
        "",
        "**Attacker:** a provider who read the source and ships crafted ONNX files (external-data tricks, "
        "declared sizes, control flow, run-time sizes, malformed metadata and graphs, corrupted bytes) or a "
        "crafted probe set (.npz, IDX, PNG folders). Each mutant runs in a forked child with RLIMIT_AS = "
        f"parent + {data['settings']['memory_mb_above_parent']} MiB and a {data['settings']['timeout_s']:g} s "
        "timeout: `SafeModel` load + `predict` (or the probe reader), `vet` (no behavioural test; the leakage "
        f"audit on 1 in {data['settings']['leakage_every']}), and `edgeguard vet` through click on 1 in "
        f"{data['settings']['cli_every']}. inotify watches the working directory (canary files named like data "
        "files) and a secret file next to the model's folder.",
        "",
        "| tried | ran fine | clean errors | mutants with defects | hangs | signals |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {data['tried']} | {data['ran_fine']} | {data['clean_errors']} | {data['mutants_with_defects']} | "
        f"{data['hangs']} | {sum(data['signals'].values())} |",
        "",
        "Detector self-test (one deliberate defect each, run before the mutants): "
        + ", ".join(
            f"{name} {'seen' if seen else 'NOT seen'}" for name, seen in data.get("selftest_detected", {}).items()
        )
        + ".",
        "",
        "Defects by type (target: 0 each):",
        "",
        "| " + " | ".join(d) + " |",
        "|" + "---:|" * len(d),
        "| " + " | ".join(str(v) for v in d.values()) + " |",
        "",
        "## By mutator",
        "",
        "| mutator | ok | clean | defect |",
        "|---|---:|---:|---:|",
    ]
    for name, counts in data["by_mutator"].items():
        lines.append(f"| {name} | {counts.get('ok', 0)} | {counts.get('clean', 0)} | {counts.get('defect', 0)} |")
    lines += ["", "## Errors raised (clean: EdgeguardError subclasses)", ""]
    lines += [f"- {name}: {count}" for name, count in data["clean_error_types"].items()]
    lines += ["", "## Defect examples", ""]
    if not data["examples"]:
        lines.append("None.")
    for example in data["examples"][:30]:
        lines.append(
            f"- #{example['index']} {example['kind']}:{example['mutator']} on {example['seed_model']} "
            f"({example['description'][:120]}): "
            + "; ".join(f"{d['type']} in {d['step']}: {d['detail'][:160]}" for d in example["defects"])
        )
    return "\n".join(lines) + "\n"


def _readme(data: dict) -> str:
    d = data["defects"]
    return (
        "| mutants tried | ran fine | clean EdgeguardError | defects | hangs | crash signals | reads outside the folder |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {data['tried']} | {data['ran_fine']} | {data['clean_errors']} | {data['defect_total']} | {data['hangs']} | "
        f"{sum(data['signals'].values())} | {d['read-outside-folder']} |\n\n"
        "Attacker: a provider who read the source and ships crafted ONNX files or probe sets "
        "(`benchmarks/fuzz.py`: structure-aware and byte-level mutants of the bundled models, tiny models and probe "
        "sets, run against SafeModel, vet and the CLI under a memory limit and a timeout).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--memory-mb", type=int, default=1536)
    parser.add_argument("--cli-every", type=int, default=4)
    parser.add_argument("--leakage-every", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="fuzz")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeguard.bench.common import cpu_name
    from tools.fuzz import fuzz

    result = fuzz(
        args.mutants,
        seed=args.seed,
        workers=args.workers,
        timeout_s=args.timeout,
        memory_mb=args.memory_mb,
        cli_every=args.cli_every,
        leakage_every=args.leakage_every,
        progress=lambda message: print(f"[fuzz] {message}", file=sys.stderr, flush=True),
    )
    data = result.to_dict()
    data["generated"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(_markdown(data))
    if args.name == "fuzz":
        (args.out / "fuzz_readme.md").write_text(_readme(data))
    print(json.dumps({k: data[k] for k in ("tried", "ran_fine", "clean_errors", "defect_total", "hangs", "signals")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
