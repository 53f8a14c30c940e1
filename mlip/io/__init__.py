"""Readers and writers of other codes' potential files (MLIP-2 `.mtp`: `mlip.io.mtp_file`)."""
