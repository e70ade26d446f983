"""auditor: data classification and dataset auditing on sparse-autoencoder features."""

__version__ = "0.1.0"
