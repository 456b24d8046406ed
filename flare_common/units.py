"""Units shared by every report."""

MB = 2**20  # bytes per MB (MiB), the unit of every memory figure
