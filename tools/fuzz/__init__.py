"""The mutation fuzzer for edgeguard's hostile-input surface (Linux: fork, RLIMIT_AS, inotify).

Not part of the library: run it with ``python benchmarks/fuzz.py``. One module per job:

- :mod:`~tools.fuzz.corpus`: seeds (bundled exported models, tiny hand-built models, a probe set);
- :mod:`~tools.fuzz.mutators`: structure-aware and byte-level model mutators;
- :mod:`~tools.fuzz.probes`: probe-set mutators (.npz, IDX, PNG folders);
- :mod:`~tools.fuzz.hostile`: hostile-graph and trap builders shared with ``tests/test_hardening.py``;
- :mod:`~tools.fuzz.sandbox`: a mutant and its sandbox on disk;
- :mod:`~tools.fuzz.harness`: the forked child that runs SafeModel, vet and the CLI;
- :mod:`~tools.fuzz.watch`: inotify watches (reads outside the model's folder);
- :mod:`~tools.fuzz.supervisor`: workers under a memory limit and a timeout;
- :mod:`~tools.fuzz.campaign`: :func:`fuzz` and :class:`FuzzResult`.
"""

from tools.fuzz.campaign import DEFECT_TYPES, FuzzResult, fuzz
from tools.fuzz.mutators import MODEL_MUTATORS
from tools.fuzz.probes import PROBE_MUTATORS
from tools.fuzz.sandbox import make_mutant

__all__ = ["DEFECT_TYPES", "FuzzResult", "MODEL_MUTATORS", "PROBE_MUTATORS", "fuzz", "make_mutant"]
