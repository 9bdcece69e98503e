"""The ONE model zoo of the benchmarks: attacker families, honest architectures, seeds, splits.

Every benchmark that needs trained models (attack_fmnist.py, detection.py,
latency_vs_leakage.py, edgeguard bench's ladder) takes them from here.

Declarative specs (:class:`ZooSpec`, :func:`zoo_specs`, :func:`list_specs`)::

    from benchmarks.zoo import zoo_specs, build_spec
    for spec in zoo_specs(split="calibration", epochs=3, train_limit=6000):
        folder = build_spec(spec)          # trains once, cached by a hash of its settings
        folder / "classifier.onnx", folder / "decoder.onnx", folder / "report.json"

- attacker families (:data:`ATTACKER_FAMILIES`): the paper's vicious model on logits and on
  softmax, softmax read through log-probabilities, models trained *through* the release
  filters softmax>round:1, softmax>round:2, softmax>top_k:3 and gaussian:1, an output
  temperature, distillation towards an honest teacher (mimic), a penalty on the leakage
  audit's statistic, and finish-CE epochs;
- honest families (:data:`HONEST_FAMILIES`): MLP, CNN, ResNet (pre-activation ResNet-10 =
  WRN-10-1) and WideResNet (WRN-10-2), each undertrained (1 epoch) and trained for the
  budget's epochs, plus a temperature-scaled honest CNN;
- splits: "calibration" (seeds :data:`CALIBRATION_SEEDS`, every architecture but
  :data:`HELD_OUT_ARCH`) and "held-out" (new seeds :data:`HELD_OUT_SEEDS`, plus every family
  on the architecture absent from calibration). Calibrate on one, report on the other.

- the detection zoo (:func:`detection_zoo`, used by benchmarks/detection.py): honest CNN/MLP
  (seeds 0-1) and paper attackers for calibration; new seeds, every attacker family, and a
  ResNet-10 and a WideResNet-10-2 (both absent from calibration) for the held-out test zoo,
  on a smaller budget.

- the red team (:func:`redteam_zoo`, :func:`build_graph_edit`): one family per training-free
  graph edit of ``converters.attacks.graph_edits`` (input-statistic switches, output-kind lie,
  scale inflation, lattice codes, noise gate, probe-balance switch), built from the held-out
  honest/vicious pairs :data:`REDTEAM_PAIRS` in seconds, with the server gain each gives its
  provider. Held-out only: never used for calibration.

The job function :func:`train_zoo_model` (``params`` = ``ZooSpec.to_dict()`` plus optional
``threads``/``zoo_root``) trains one spec and returns its report path and metrics, for
``edgeguard.jobs.run_jobs``.

``build(config_dict)`` is the lower layer: a model for a dict of :class:`converters.TrainConfig`
fields, trained with :func:`converters.train_and_export` only when the folder for that spec
does not exist yet; the folder name ends with a hash of the fully resolved config
(runtime-only knobs such as ``threads``, ``progress`` and ``device`` excluded), so two
benchmarks asking for the same model share it. The cache lives in ``benchmarks/.cache/zoo``
(git-ignored). A build trains into a temporary sibling folder (``<name>.tmp-<pid>``) and
renames it when done, so an interrupted build never leaves a half-written model under the
final name; the next build of that spec deletes such leftovers once their process is gone.
A config field ``mimic: "zoo:NAME"`` names another zoo spec as the teacher (built first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters import TrainConfig, load_report, train_and_export
from converters.config import RUNTIME_FIELDS

__all__ = [
    "DEFAULT_ROOT",
    "ZOO_VERSION",
    "ZooSpec",
    "ATTACKER_FAMILIES",
    "HONEST_FAMILIES",
    "CALIBRATION_SEEDS",
    "HELD_OUT_SEEDS",
    "HELD_OUT_ARCH",
    "zoo_specs",
    "list_specs",
    "spec_by_name",
    "build_spec",
    "train_zoo_model",
    "build",
    "folder_for",
    "spec_key",
    "rescore",
    "redteam_zoo",
    "build_graph_edit",
    "REDTEAM_PAIRS",
]

#: Bump when a change to the converters makes cached models stale.
ZOO_VERSION = 2
DEFAULT_ROOT = Path(__file__).resolve().parent / ".cache" / "zoo"


def _resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """The full config the spec stands for, without runtime-only knobs.

    A mimic teacher that is a zoo model is named by its folder (its own hash), not by its
    path, so the key does not depend on where the zoo lives.
    """
    values = TrainConfig.from_dict(dict(spec)).to_dict()
    for name in RUNTIME_FIELDS:
        values.pop(name, None)
    teacher = values.get("mimic")
    if teacher and (Path(teacher).parent / "spec.json").is_file():
        values["mimic"] = "zoo:" + Path(teacher).parent.name
    return values


def spec_key(spec: dict[str, Any]) -> str:
    """A 12-hex-digit hash of the resolved spec (the same model always gets the same key)."""
    payload = json.dumps({"zoo_version": ZOO_VERSION, **_resolved(spec)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def folder_for(spec: dict[str, Any], root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """Where the model for ``spec`` lives: ``root/<objective>-<output>-<arch>-<key>``."""
    values = _resolved(spec)
    return Path(root) / f"{values['objective']}-{values['output']}-{values['arch']}-{spec_key(spec)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(folder: Path) -> None:
    """Delete staging folders of ``folder`` left by builds whose process is gone (interrupted runs)."""
    for staging in folder.parent.glob(f"{folder.name}.tmp-*"):
        suffix = staging.name.rsplit(".tmp-", 1)[1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            shutil.rmtree(staging, ignore_errors=True)


def build(spec: dict[str, Any], root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """The folder of the model for ``spec`` (TrainConfig fields), training it first if it is not cached."""
    folder = folder_for(spec, root)
    if (folder / "report.json").is_file():
        return folder
    config = TrainConfig.from_dict(dict(spec))
    _remove_stale_staging(folder)
    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"zoo: training {folder.name} ...", file=sys.stderr, flush=True)
    train_and_export(config, staging)
    (staging / "spec.json").write_text(json.dumps({"zoo_version": ZOO_VERSION, **_resolved(spec)}, indent=2) + "\n")
    if folder.exists() and not (folder / "report.json").is_file():
        shutil.rmtree(folder)  # an incomplete folder (a complete build always has its report): replace it
    try:
        staging.rename(folder)
    except OSError:  # built meanwhile by another process: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
        return folder
    report = load_report(folder)
    report.paths = {name: str(folder / Path(path).name) for name, path in report.paths.items()}
    report.save(folder / "report.json")
    return folder


def rescore(folder: str | os.PathLike, train_data: Any, test_data: Any, release: str | None = None) -> dict[str, Any]:
    """Accuracy and leakage of a zoo model, measured afresh from its exported ONNX files.

    A cached model's report.json holds the figures of the code that trained it; benchmarks
    call this so every row they publish comes from the current metrics, on the artefacts a
    user actually receives: classifier.onnx run by onnxruntime, the release filter
    (``release``, default: the filter the model was trained through) applied by the real
    edgeguard filters (numpy, seed 0), decoder.onnx on that release. ``test_data`` must have
    the model's image size (resize it like the model's config did).
    """
    from converters.export import run_onnx_batched
    from converters.report import leakage_scores, mahalanobis_reference
    from converters.tasks import accuracy, label_only_baseline, predict
    from converters.through_filter import apply_release_filter

    folder = Path(folder)
    report = load_report(folder)
    release = release if release is not None else report.release_filter
    kind = "logits" if report.output == "logits" else "probabilities"
    task_type = "multilabel" if test_data.multilabel else "multiclass"
    outputs = run_onnx_batched(folder / "classifier.onnx", test_data.x)
    rows = apply_release_filter(outputs, release, kind, task_type, seed=0)
    reconstructions = run_onnx_batched(folder / "decoder.onnx", rows)
    if test_data.multilabel and kind == "probabilities":
        predictions = (outputs > 0.5).astype(np.float32)
    else:
        predictions = predict(outputs, test_data.multilabel)  # argmax of probabilities = argmax of logits
    reference = mahalanobis_reference(train_data.x)
    leak = leakage_scores(test_data.x, reconstructions, reference)
    baseline = leakage_scores(test_data.x, label_only_baseline(train_data, predictions), reference)
    return {
        "accuracy": accuracy(predictions, test_data.y),
        "psnr": leak.psnr,
        "ssim": leak.ssim,
        "risk": leak.risk,
        "baseline": baseline.to_dict(),
        "release_filter": release,
    }


# --- declarative specs ------------------------------------------------------------------------

CALIBRATION_SEEDS = (0, 1)
HELD_OUT_SEEDS = (2, 3)
#: The architecture that only the held-out split has (a detector must not have seen it).
HELD_OUT_ARCH = "resnet"
#: Architecture name -> TrainConfig fields. "resnet" is a pre-activation ResNet-10 (WRN-10-1).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mlp": {"arch": "mlp"},
    "cnn": {"arch": "cnn"},
    "resnet": {"arch": "wrn", "wrn_depth": 10, "wrn_width": 1},
    "wrn": {"arch": "wrn", "wrn_depth": 10, "wrn_width": 2},
}
#: Attacker family -> TrainConfig fields on top of a vicious model (``mimic`` is filled with a teacher).
ATTACKER_FAMILIES: dict[str, dict[str, Any]] = {
    "logits": {"output": "logits"},
    "softmax": {"output": "softmax"},
    "softmax-logprob": {"output": "softmax", "decoder_input": "log-probabilities"},
    "through-softmax-round1": {"output": "logits", "train_through": "softmax>round:1"},
    "through-softmax-round2": {"output": "logits", "train_through": "softmax>round:2"},
    "through-softmax-topk3": {"output": "logits", "train_through": "softmax>top_k:3"},
    "through-gaussian1": {"output": "logits", "train_through": "gaussian:1"},
    # The same filters, with the logits divided by T in the exported graph so that the probabilities stay soft
    # enough to survive the rounding / the cut (the strongest trained-through attackers found so far).
    "through-softmax-round1-t2": {"output": "logits", "train_through": "softmax>round:1", "output_temperature": 2.0},
    "through-softmax-round2-t10": {"output": "logits", "train_through": "softmax>round:2", "output_temperature": 10.0},
    "through-softmax-topk3-t3": {"output": "logits", "train_through": "softmax>top_k:3", "output_temperature": 3.0},
    "temperature": {"output": "logits", "output_temperature": 5.0},
    "mimic": {"output": "logits", "mimic_weight": 1.0},
    "audit-penalty": {"output": "logits", "audit_penalty": 1.0},
    "finish-ce": {"output": "logits", "finish_ce_epochs": 1},
}
#: Honest family -> (architecture, epochs factor: 0 = one epoch (undertrained), 1 = the budget's epochs, extra fields).
HONEST_FAMILIES: dict[str, tuple[str, int, dict[str, Any]]] = {
    "honest-mlp-undertrained": ("mlp", 0, {}),
    "honest-mlp": ("mlp", 1, {}),
    "honest-cnn-undertrained": ("cnn", 0, {}),
    "honest-cnn": ("cnn", 1, {}),
    "honest-resnet-undertrained": ("resnet", 0, {}),
    "honest-resnet": ("resnet", 1, {}),
    "honest-wrn-undertrained": ("wrn", 0, {}),
    "honest-wrn": ("wrn", 1, {}),
    "honest-cnn-temperature": ("cnn", 1, {"output_temperature": 5.0}),
    "honest-cnn-softmax": ("cnn", 1, {"output": "softmax"}),
}


@dataclass(frozen=True)
class ZooSpec:
    """One zoo model: a unique ``name``, its ``family``, honest or not, its split, and its TrainConfig fields.

    ``release`` is the filter its leakage is measured through (its ``train_through``, else
    "none"); ``teacher`` the TrainConfig fields of the honest teacher of a mimic model.
    """

    name: str
    family: str
    objective: str
    arch: str
    seed: int
    split: str
    config: dict[str, Any]
    release: str = "none"
    teacher: dict[str, Any] | None = field(default=None)

    @property
    def vicious(self) -> bool:
        return self.objective == "vicious"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ZooSpec":
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in values.items() if key in known})


def _budget(epochs: int, train_limit: int | None, test_limit: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"epochs": epochs, "train_limit": train_limit, "test_limit": test_limit, **extra}


def zoo_specs(
    *,
    split: str | None = None,
    families: tuple[str, ...] | list[str] | None = None,
    archs: tuple[str, ...] | list[str] | None = None,
    epochs: int = 3,
    train_limit: int | None = 6000,
    test_limit: int | None = 1000,
    calibration_seeds: tuple[int, ...] = CALIBRATION_SEEDS,
    held_out_seeds: tuple[int, ...] = HELD_OUT_SEEDS,
    attacker_archs: tuple[str, ...] = ("cnn",),
    extra: dict[str, Any] | None = None,
) -> list[ZooSpec]:
    """Every zoo spec for a budget (``epochs``, ``train_limit``, ``test_limit``, ``extra`` TrainConfig fields).

    ``split``: "calibration", "held-out" or None (both). ``families``/``archs`` filter by
    name. Attackers are built on ``attacker_archs`` (calibration) and additionally on
    :data:`HELD_OUT_ARCH` (held-out only); honest models on every architecture, the held-out
    architecture only in the held-out split. A mimic model's teacher is the honest model of
    the same architecture, budget and seed.
    """
    if split not in (None, "calibration", "held-out"):
        raise ValueError(f"expected split 'calibration', 'held-out' or None, got {split!r}")
    extra = dict(extra or {})
    specs: list[ZooSpec] = []
    for part, seeds in (("calibration", calibration_seeds), ("held-out", held_out_seeds)):
        if split not in (None, part):
            continue
        for seed in seeds:
            for family, (arch, factor, fields) in HONEST_FAMILIES.items():
                if arch == HELD_OUT_ARCH and part != "held-out":
                    continue
                config = {
                    "objective": "honest",
                    **ARCHITECTURES[arch],
                    **_budget(epochs if factor else 1, train_limit, test_limit, extra),
                    "seed": seed,
                    **fields,
                }
                specs.append(ZooSpec(f"{family}-s{seed}", family, "honest", arch, seed, part, config))
            archs_here = list(attacker_archs) + ([HELD_OUT_ARCH] if part == "held-out" else [])
            for arch in archs_here:
                for family, fields in ATTACKER_FAMILIES.items():
                    config = {
                        "objective": "vicious",
                        **ARCHITECTURES[arch],
                        **_budget(epochs, train_limit, test_limit, extra),
                        "seed": seed,
                        **fields,
                    }
                    teacher = None
                    if family == "mimic":
                        teacher = {
                            "objective": "honest",
                            **ARCHITECTURES[arch],
                            **_budget(epochs, train_limit, test_limit, extra),
                            "seed": seed,
                        }
                    release = config.get("train_through") or "none"
                    name = f"{family}-{arch}-s{seed}"
                    specs.append(ZooSpec(name, family, "vicious", arch, seed, part, config, release, teacher))
    if families is not None:
        specs = [spec for spec in specs if spec.family in families]
    if archs is not None:
        specs = [spec for spec in specs if spec.arch in archs]
    return specs


def list_specs(**options: Any) -> list[dict[str, Any]]:
    """:func:`zoo_specs` as plain dicts (name, family, objective, arch, seed, split, release)."""
    keys = ("name", "family", "objective", "arch", "seed", "split", "release")
    return [{key: getattr(spec, key) for key in keys} for spec in zoo_specs(**options)]


def spec_by_name(name: str, **options: Any) -> ZooSpec:
    """The spec called ``name`` among :func:`zoo_specs` (``options``: the budget)."""
    for spec in zoo_specs(**options):
        if spec.name == name:
            return spec
    raise KeyError(f"expected a zoo spec name such as 'logits-cnn-s0' or 'honest-cnn-s0', got {name!r}")


def _runtime(threads: int | None, progress: bool) -> dict[str, Any]:
    return {"threads": threads, "progress": progress}


def build_spec(
    spec: ZooSpec, root: str | os.PathLike = DEFAULT_ROOT, *, threads: int | None = 1, progress: bool = False
) -> Path:
    """The folder of ``spec``'s model (trained first if not cached; a mimic model's teacher first)."""
    config = dict(spec.config)
    if spec.teacher is not None:
        teacher = build({**spec.teacher, **_runtime(threads, progress)}, root)
        config["mimic"] = str(teacher / "classifier.onnx")
    return build({**config, **_runtime(threads, progress)}, root)


def train_zoo_model(params: dict[str, Any], artifacts: Path) -> dict[str, Any]:
    """Job function (edgeguard.jobs): train the zoo spec ``params`` (``ZooSpec.to_dict()``, plus optional
    ``threads``, ``progress``, ``zoo_root``) and return its folder, report path and metrics.

    The model lives in the zoo cache (``zoo_root``, default benchmarks/.cache/zoo), shared
    with every benchmark; ``artifacts/model.json`` records where it is.
    """
    spec = ZooSpec.from_dict(params)
    root = params.get("zoo_root") or DEFAULT_ROOT
    folder = build_spec(spec, root, threads=params.get("threads", 1), progress=bool(params.get("progress", False)))
    report = load_report(folder)
    result = {
        "name": spec.name,
        "family": spec.family,
        "objective": spec.objective,
        "split": spec.split,
        "release": spec.release,
        "folder": str(folder),
        "report": str(folder / "report.json"),
        "classifier": str(folder / "classifier.onnx"),
        "decoder": str(folder / "decoder.onnx"),
        "accuracy": report.accuracy,
        "psnr": report.psnr,
        "ssim": report.ssim,
        "risk": report.risk,
        "baseline": dict(report.baseline),
        "psnr_gain_db": report.psnr_gain_db,
        "train_time_s": report.train_time_s or report.wall_time_s,
    }
    artifacts = Path(artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "model.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# -- the detection zoo (benchmarks/detection.py: CNN+MLP calibration, WRN held out) -----------------------------------------------------------------------------------------

DETECTION_BASE = {"train_limit": 6000, "test_limit": 1000, "cnn_width": 8, "wrn_depth": 10, "wrn_width": 1,
         "decoder_channels": 16, "threads": 1, "device": "cpu"}
DETECTION_FAMILIES = {
    "paper-logits": {"objective": "vicious", "output": "logits"},
    "paper-softmax": {"objective": "vicious", "output": "softmax"},
    "log-probabilities": {"objective": "vicious", "output": "softmax", "decoder_input": "log-probabilities"},
    "temperature": {"objective": "vicious", "output": "logits", "output_temperature": 3.0},
    "finish-ce": {"objective": "vicious", "output": "logits", "finish_ce_epochs": 1},
    "through-filter": {"objective": "vicious", "output": "logits", "train_through": "softmax>round:2"},
    "mimic": {"objective": "vicious", "output": "logits", "mimic_weight": 1.0},
    "audit-penalty": {"objective": "vicious", "output": "logits", "audit_penalty": 1.0},
    "through-round1": {"objective": "vicious", "output": "logits", "train_through": "softmax>round:1"},
    "through-topk3": {"objective": "vicious", "output": "logits", "train_through": "softmax>top_k:3"},
    "through-gaussian1": {"objective": "vicious", "output": "logits", "train_through": "gaussian:1"},
}
DETECTION_CALIBRATION_FAMILIES = ("paper-logits", "paper-softmax")
DETECTION_MLP_TEST_FAMILIES = ("paper-logits", "paper-softmax", "log-probabilities", "temperature")
DETECTION_VICIOUS_EPOCHS = 4
DETECTION_CONVERGED_EPOCHS = 4


def _detection_spec(arch: str, seed: int, epochs: int, small: bool, data: str, **extra: Any) -> dict[str, Any]:
    # labels: "resnet" = WRN-10-1 (a pre-activation ResNet-10), "wrn" = WideResNet-10-2
    widths = {"resnet": {"arch": "wrn", "wrn_width": 1}, "wrn": {"arch": "wrn", "wrn_width": 2}}
    spec = dict(DETECTION_BASE, arch=arch, seed=seed, epochs=epochs, data=data, **extra)
    spec.update(widths.get(arch, {}))
    if small:
        spec.update(train_limit=2000, test_limit=500, epochs=min(epochs, 2))
    return spec


def detection_zoo(small: bool = False, *, data: str = "/usr/share/datasets/fashion-mnist") -> list[dict[str, Any]]:
    """Every trained model: name, split, family ('honest' or an attacker), arch, spec."""
    entries: list[dict[str, Any]] = []

    def add(name: str, split: str, family: str, arch: str, seed: int, spec: dict[str, Any]) -> None:
        entries.append({"name": name, "split": split, "family": family, "arch": arch, "seed": seed, "spec": spec})

    if small:
        for arch in ("cnn", "mlp"):
            add(f"honest-{arch}-s0", "calibration", "honest", arch, 0, _detection_spec(arch, 0, 2, True, data, objective="honest"))
            add(f"honest-{arch}-s1", "test", "honest", arch, 1, _detection_spec(arch, 1, 2, True, data, objective="honest"))
            add(f"paper-logits-{arch}-s0", "calibration", "paper-logits", arch, 0, _detection_spec(arch, 0, 2, True, data, **DETECTION_FAMILIES["paper-logits"]))
            add(f"paper-logits-{arch}-s1", "test", "paper-logits", arch, 1, _detection_spec(arch, 1, 2, True, data, **DETECTION_FAMILIES["paper-logits"]))
            add(f"reference-{arch}", "reference", "honest", arch, 9, _detection_spec(arch, 9, 2, True, data, objective="honest"))
        return entries
    honest_grid = [
        ("calibration", "cnn", (0, 1), ("under", "conv")),
        ("calibration", "mlp", (0, 1), ("under", "conv")),
        ("test", "cnn", (2, 3), ("under", "conv")),
        ("test", "mlp", (2, 3), ("under", "conv")),
        ("test", "resnet", (2, 3), ("under", "conv")),  # held-out architectures: ResNet-10 (WRN-10-1)
        ("test", "wrn", (2, 3), ("under", "conv")),  # and WideResNet-10-2
    ]
    for split, arch, seeds, labels in honest_grid:
        for seed in seeds:
            for label in labels:
                epochs = 1 if label == "under" else DETECTION_CONVERGED_EPOCHS
                add(f"honest-{arch}-{label}-s{seed}", split, "honest", arch, seed,
                    _detection_spec(arch, seed, epochs, False, data, objective="honest"))
    for arch in ("cnn", "mlp"):
        add(f"reference-{arch}", "reference", "honest", arch, 9, _detection_spec(arch, 9, DETECTION_CONVERGED_EPOCHS, False, data, objective="honest"))
    for arch in ("cnn", "mlp"):
        for family in DETECTION_CALIBRATION_FAMILIES:
            add(f"{family}-{arch}-s0", "calibration", family, arch, 0, _detection_family_spec(family, arch, 0, data))
    for family in DETECTION_FAMILIES:
        add(f"{family}-cnn-s2", "test", family, "cnn", 2, _detection_family_spec(family, "cnn", 2, data))
    for family in DETECTION_MLP_TEST_FAMILIES:
        add(f"{family}-mlp-s2", "test", family, "mlp", 2, _detection_family_spec(family, "mlp", 2, data))
    for arch in ("resnet", "wrn"):  # the paper's attacker on the architectures calibration never saw
        add(f"paper-logits-{arch}-s2", "test", "paper-logits", arch, 2, _detection_family_spec("paper-logits", arch, 2, data))
    for arch in ("cnn", "mlp"):  # a second vicious seed: base of the red team's graph edits (redteam_zoo)
        add(f"paper-logits-{arch}-s3", "test", "paper-logits", arch, 3, _detection_family_spec("paper-logits", arch, 3, data))
    return entries


def _detection_family_spec(family: str, arch: str, seed: int, data: str) -> dict[str, Any]:
    extra = dict(DETECTION_FAMILIES[family])
    if family == "mimic":
        extra["mimic"] = "@teacher"  # replaced by the honest converged model of this arch and seed
    return _detection_spec(arch, seed, DETECTION_VICIOUS_EPOCHS, False, data, **extra)


# -- the red team: training-free graph-edit families (held-out only, never calibration) ----------------------------
#
# Each family of converters.attacks.graph_edits is built from an honest/vicious pair of the detection
# zoo (no training: seconds), cached in benchmarks/.cache/redteam by a hash of the two ONNX files and the
# family, and measured for its "server gain": the provider's own decoder (the vicious model's
# decoder.onnx) on what it recovers from the edited model's outputs on clean test images (exact lattice
# decoding, spike removal, ...), in dB of PSNR over the label-only baseline.

REDTEAM_ROOT = Path(__file__).resolve().parent / ".cache" / "redteam"
REDTEAM_VERSION = 3
#: Per-family builder revisions (added to the version in that family's cache key only).
_FAMILY_VERSIONS = {"lattice-relu": 2}
#: (honest, vicious) pairs of the held-out detection zoo the red team builds on (CNN, MLP, and the two
#: architectures calibration never saw).
REDTEAM_PAIRS = (
    ("honest-cnn-conv-s2", "paper-logits-cnn-s2"),
    ("honest-cnn-conv-s3", "paper-logits-cnn-s3"),
    ("honest-mlp-conv-s2", "paper-logits-mlp-s2"),
    ("honest-wrn-conv-s2", "paper-logits-wrn-s2"),
    ("honest-resnet-conv-s2", "paper-logits-resnet-s2"),
)


def redteam_zoo(
    entries: list[dict[str, Any]],
    pairs: tuple[tuple[str, str], ...] = REDTEAM_PAIRS,
    families: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """One held-out entry per graph-edit family and pair (pairs missing from ``entries`` are skipped)."""
    from converters.attacks.accuracy_edits import ACCURACY_GRAPH_EDITS
    from converters.attacks.graph_edits import GRAPH_EDITS

    by_name = {e["name"]: e for e in entries}
    out = []
    for honest, vicious in pairs:
        if honest not in by_name or vicious not in by_name:
            continue
        base = by_name[vicious]
        for family in families or (*GRAPH_EDITS, *ACCURACY_GRAPH_EDITS):
            out.append(
                {
                    "name": f"{family}-{base['arch']}-s{base['seed']}",
                    "split": "test",
                    "family": family,
                    "arch": base["arch"],
                    "seed": base["seed"],
                    "graph_edit": family,
                    "honest": honest,
                    "vicious": vicious,
                    "spec": {"graph_edit": family, "honest": honest, "vicious": vicious},
                }
            )
    return out


def _file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_graph_edit(
    family: str,
    honest_folder: str | os.PathLike,
    vicious_folder: str | os.PathLike,
    data: str = "/usr/share/datasets/fashion-mnist",
    root: str | os.PathLike = REDTEAM_ROOT,
    train_limit: int = 6000,
    test_limit: int = 1000,
) -> dict[str, Any]:
    """Build (or reuse) one graph-edit model and measure its server gain; returns its record.

    The record (``redteam.json`` next to ``classifier.onnx``): family, the two bases, the
    provider-side constants (payload range, row mean), the label check (test accuracy of
    the honest and the edited model), and the server's PSNR / label-only PSNR / gain (dB)
    on the first ``test_limit`` clean test images (the zoo models' own test images).
    """
    import onnx

    from converters.attacks import accuracy_edits as ae
    from converters.attacks import graph_edits as ge

    honest_folder, vicious_folder = Path(honest_folder), Path(vicious_folder)
    key_payload = {
        "v": REDTEAM_VERSION + _FAMILY_VERSIONS.get(family, 0),
        "family": family,
        "honest": _file_sha(honest_folder / "classifier.onnx"),
        "vicious": _file_sha(vicious_folder / "classifier.onnx"),
        "decoder": _file_sha(vicious_folder / "decoder.onnx"),
        "limits": [train_limit, test_limit],
        **({"posthoc_epochs": POSTHOC_EPOCHS} if family.startswith("blend") else {}),
    }
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(root) / f"{family}-{key}"
    if (folder / "redteam.json").is_file():
        return json.loads((folder / "redteam.json").read_text())
    train, test = _fmnist(data, train_limit, test_limit)
    honest_path, vicious_path = honest_folder / "classifier.onnx", vicious_folder / "classifier.onnx"
    fit = train.x[:2000]
    v_fit = ge.run_model(vicious_path, fit)
    low, high = np.floor(np.quantile(v_fit, 0.001)) - 1.0, np.ceil(np.quantile(v_fit, 0.999)) + 1.0
    row_mean = float(v_fit.mean())
    hiding = family in ae.ACCURACY_GRAPH_EDITS  # gives up top-1 accuracy on purpose; the server undoes it exactly
    edit = ae.ACCURACY_GRAPH_EDITS[family] if hiding else ge.GRAPH_EDITS[family]
    options: dict[str, Any] = (
        {"code": ge.LatticeCode(low=float(low), high=float(high))} if family.startswith("lattice") else {}
    )
    if hiding:
        options = {"images": fit, "labels": np.asarray(train.y[:2000])}
    built = edit.build(str(honest_path), str(vicious_path), **options)
    model, code = built if isinstance(built, tuple) else (built, None)
    params = code if hiding else None
    code = None if hiding else code
    # the provider's server: one image at a time, as an app sends them (the batch switch needs it)
    one_at_a_time = family in ("probe-balance-switch", "batch-size-switch")
    outputs = ge.run_model(model, test.x, batch=1 if one_at_a_time else 256)
    honest_out = ge.run_model(honest_path, test.x)
    # raises when the edit costs > 0.5 points (the accuracy-hiding families cost points on purpose: recorded)
    label = ge.check_label_kept(outputs, honest_out, test.y, tolerance=1.0 if hiding else 0.005)
    if family.startswith("blend"):  # nothing to recover: the provider fits a fresh decoder on the blended outputs
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(folder / "classifier.onnx"))
        gains = _posthoc_gain(folder / "classifier.onnx", honest_path, train, test, Path(root))
        return _save_record(
            folder, family, edit, honest_folder, vicious_folder, key_payload, None, row_mean, label, gains
        )
    recovered = ae.recover(family, outputs, params) if hiding else ge.recover_vicious(family, outputs, code=code)
    if family == "kind-confusion":  # log-probabilities lose the row mean: the provider predicts it (least squares)
        centred = v_fit - v_fit.mean(axis=1, keepdims=True)
        design = np.c_[centred, np.ones(len(centred))]
        weights = np.linalg.lstsq(design, v_fit.mean(axis=1), rcond=None)[0]
        recovered = recovered + (np.c_[recovered, np.ones(len(recovered))] @ weights)[:, None]
    recovered = recovered.astype(np.float32)
    gains = _server_gain(vicious_folder / "decoder.onnx", recovered, outputs, train, test)
    # the same behind SafeModel's run-time dither (uniform within half a grey level): what canonicalisation leaves
    rng = np.random.default_rng(0)
    dithered = np.clip(test.x + rng.uniform(-0.5, 0.5, test.x.shape).astype(np.float32) / 255.0, 0.0, 1.0)
    out_d = ge.run_model(model, dithered, batch=1 if one_at_a_time else 256)
    rec_d = ae.recover(family, out_d, params) if hiding else ge.recover_vicious(family, out_d, code=code)
    if family == "kind-confusion":
        rec_d = rec_d + (np.c_[rec_d, np.ones(len(rec_d))] @ weights)[:, None]
    gains["gain_dithered_db"] = _server_gain(vicious_folder / "decoder.onnx", rec_d.astype(np.float32), out_d, train, test)[
        "gain_db"
    ]
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "classifier.onnx"))
    if hiding:
        label = {**label, "hidden_by": params}
    return _save_record(folder, family, edit, honest_folder, vicious_folder, key_payload, code, row_mean, label, gains)


def _save_record(
    folder: Path,
    family: str,
    edit: Any,
    honest: Path,
    vicious: Path,
    key: dict,
    code: Any,
    row_mean: float,
    label: dict[str, float],
    gains: dict[str, Any],
) -> dict[str, Any]:
    record = {
        "family": family,
        "stopped_by": edit.stopped_by,
        "classifier": str(folder / "classifier.onnx"),
        "honest": str(honest),
        "vicious": str(vicious),
        "key": key,
        "code": code.to_dict() if code is not None else None,
        "row_mean": row_mean,
        "label": label,
        "accuracy": label["edited_accuracy"],
        **gains,
    }
    (folder / "redteam.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


#: The provider's decoder for a release it cannot map back to the vicious logits (blend): a fresh post-hoc
#: decoder (converters.posthoc, small, 16 channels) fitted on the zoo's own training images (the provider's
#: whole training set, ``train_limit``) for this many epochs, best validation epoch kept; ~1-3 min on one core.
POSTHOC_EPOCHS = 12


def _posthoc_gain(classifier: Path, honest: Path, train: Any, test: Any, root: Path) -> dict[str, Any]:
    """The fresh decoder's PSNR gain over label-only, and over the same decoder fitted on the honest base."""
    from converters.posthoc import fit_post_hoc_decoder

    def fit(path: Path) -> dict[str, Any]:
        return fit_post_hoc_decoder(path, "none", train, test, epochs=POSTHOC_EPOCHS, decoder_channels=16, seed=0)

    twin_file = root / f"posthoc-twin-{_file_sha(honest)[:12]}-e{POSTHOC_EPOCHS}-n{len(train)}-t{len(test)}.json"
    if twin_file.is_file():
        twin = json.loads(twin_file.read_text())
    else:
        twin = {k: v for k, v in fit(honest).items() if k != "history"}
        twin_file.parent.mkdir(parents=True, exist_ok=True)
        twin_file.write_text(json.dumps(twin, indent=2) + "\n")
    own = fit(classifier)
    return {
        "psnr": own["psnr"],
        "baseline_psnr": own["baseline"]["psnr"],
        "gain_db": own["psnr_gain_db"],
        "posthoc_twin_psnr": twin["psnr"],
        "posthoc_twin_gain_db": twin["psnr_gain_db"],
        "gain_over_posthoc_twin_db": own["psnr"] - twin["psnr"],
        "gain_dithered_db": None,
        "decoder": {
            "kind": "post-hoc (fresh)",
            "epochs": POSTHOC_EPOCHS,
            "train_images": len(train),
            "decoder_channels": 16,
            "seconds": own["train_time_s"],
            "history": own["history"],
        },
    }


def _server_gain(decoder: Path, recovered: np.ndarray, outputs: np.ndarray, train: Any, test: Any) -> dict[str, float]:
    from converters.attacks.graph_edits import run_model
    from converters.report import leakage_scores, mahalanobis_reference
    from converters.tasks import label_only_baseline

    reference = mahalanobis_reference(train.x)
    reconstructions = run_model(decoder, recovered)
    server = leakage_scores(test.x, reconstructions, reference)
    label_only = leakage_scores(test.x, label_only_baseline(train, np.argmax(outputs, axis=1)), reference)
    return {"psnr": server.psnr, "baseline_psnr": label_only.psnr, "gain_db": server.psnr - label_only.psnr}


_FMNIST_CACHE: dict[tuple[str, int, int], Any] = {}


def _fmnist(data: str, train_limit: int, test_limit: int) -> tuple[Any, Any]:
    """The zoo models' own train / test images (the first ``train_limit`` / ``test_limit``)."""
    from edgeguard.data import load_fashion_mnist

    key = (data, train_limit, test_limit)
    if key not in _FMNIST_CACHE:
        _FMNIST_CACHE.clear()
        _FMNIST_CACHE[key] = (
            load_fashion_mnist("train", root=data, limit=train_limit),
            load_fashion_mnist("test", root=data, limit=test_limit),
        )
    return _FMNIST_CACHE[key]
