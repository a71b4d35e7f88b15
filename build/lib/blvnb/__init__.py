"""blvnb: the library behind an executable book reproducing BLV (CVPR 2023) and DARS (ICCV 2021)."""

__version__ = "0.1.1"

from blvnb.errors import BlvnbError  # noqa: E402,F401
