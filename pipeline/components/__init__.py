"""Custom TFX components of the MTIN pipeline."""
