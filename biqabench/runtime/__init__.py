"""Runtime: device and precision, distributed processes, progress, interrupts, launchers."""
