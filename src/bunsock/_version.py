"""The one place bunsock's version is written: pyproject.toml reads it (statically) at build time,
and bunsock.__version__ re-exports it. A release is a commit that changes it plus a tag v<version>."""
__version__ = "0.1.0"
