"""``python -m converters``: see :mod:`converters.cli`."""

import os

# On a shared CPU, OpenMP threads that spin while waiting make multi-threaded torch many
# times slower; passive waiting avoids that. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from converters.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
