"""Developer tools that are not part of the edgeguard library (not installed with the wheel)."""
