"""ocimirror: mirror container images into OCI image layouts on disk, S3 or GCS.

The core (this package) knows descriptors, handlers, stores and registries, and imports no Prefect; the
``tasks`` and ``flows`` packages build the Prefect pipeline on top of it.
"""

__version__ = "0.1.0"
