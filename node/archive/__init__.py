"""Backups off the machine: object stores (S3, a local directory) and the snapshots exported to them."""
