"""Attacker builders: the one place where the zoo, the vet's red team and the bench's rungs get their attackers.

- :mod:`converters.attacks.graph_edits`: training-free graph edits on top of an honest and a vicious model
  (input-statistic switches, output-kind lies, scale spikes, lattice steganography, hidden functions).
- :mod:`converters.attacks.codes`: hand-built codes that survive a given release (rung 4 of the ladder).

``benchmarks/zoo.py``, the tests and ``edgeguard bench`` (through the ``edgeguard.attack_trainers``
entry point) all build their attackers here.
"""
