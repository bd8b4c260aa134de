"""Helpers of the corpus tests: read a manifest, and write an edited one resealed the way a
writer seals it, so that a test exercises only its own edit."""

from __future__ import annotations

import hashlib
import json

from refmask.conformance import golden


def manifest_of(directory):
    return json.loads((directory / golden.MANIFEST).read_text())


def write_manifest(directory, manifest):
    """Write an edited manifest, resealed the way a writer seals it (docs/conformance: the
    SHA-256 of the canonical JSON without the key), so only the edit itself is tested."""
    if "manifest_sha256" in manifest:
        body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        manifest = {**body, "manifest_sha256": hashlib.sha256(canonical.encode()).hexdigest()}
    (directory / golden.MANIFEST).write_text(json.dumps(manifest))
