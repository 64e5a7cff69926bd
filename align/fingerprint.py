"""Compatibility alias: a model's identity lives in ``common/fingerprint.py`` (shared by align/ and eval/)."""

from common.fingerprint import *  # noqa: F403
from common.fingerprint import damaged_weight_files, file_sha256, fingerprint, folder_hash, is_local  # noqa: F401
