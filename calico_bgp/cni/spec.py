"""CNI spec versions and commands: which versions this plugin speaks and which one a config gets.

Follows containernetworking/cni SPEC.md (1.1.0: "Version considerations", the `cniVersions`
list of a configuration) and pkg/version + pkg/skel: a config names the version its results
must be written in; one this plugin does not speak is error 1; GC and STATUS exist from 1.1.0
on and CHECK from 0.4.0 on.
"""
from __future__ import annotations

from typing import Any

from calico_bgp.cni.error import INCOMPATIBLE_VERSION, INVALID_CONFIG, CNIError

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# the first spec version in which each command exists
SINCE = {"ADD": "0.1.0", "DEL": "0.1.0", "VERSION": "0.2.0", "CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def parse_version(text: Any) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); anything else is an invalid config naming the value."""
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CNIError(INVALID_CONFIG, f"cniVersion {text!r}: not a version (expected MAJOR.MINOR.PATCH)")
    return int(parts[0]), int(parts[1]), int(parts[2])


def negotiate(cni_version: Any, cni_versions: Any = None) -> str:
    """The version this invocation's output is written in: `cniVersion`, which must be one of
    SUPPORTED_VERSIONS.

    `cniVersions` is a config list's field: the runtime picks the version from it and hands each
    plugin its choice as `cniVersion` (libcni's InjectConf), so a plugin writes what `cniVersion`
    says whatever the list holds. A config with the list and no `cniVersion` gets the highest
    listed version this plugin speaks.
    """
    supported = ", ".join(SUPPORTED_VERSIONS)
    if cni_versions is not None:
        if not isinstance(cni_versions, list):
            raise CNIError(INVALID_CONFIG, f"cniVersions: must be a list of versions, got {cni_versions!r}")
        for v in cni_versions:
            parse_version(v)
        common = [v for v in SUPPORTED_VERSIONS if v in cni_versions]
        if cni_version is None:
            if common:
                return common[-1]
            raise CNIError(INCOMPATIBLE_VERSION, f"incompatible CNI versions: config offers {cni_versions}, "
                                                 f"this plugin supports {supported}")
    if cni_version is None:
        raise CNIError(INCOMPATIBLE_VERSION, f"network config has no cniVersion (0.1.0 implied); "
                                             f"this plugin supports {supported}")
    parse_version(cni_version)
    if cni_version not in SUPPORTED_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, f"incompatible CNI versions: config is {cni_version!r}, "
                                             f"this plugin supports {supported}")
    return cni_version


def check_command(command: str, version: str) -> None:
    """A command the negotiated version does not have (GC or STATUS before 1.1.0) is error 1."""
    if parse_version(version) < parse_version(SINCE[command]):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version {version} does not allow {command} "
                                             f"(it exists from {SINCE[command]} on)")


def version_result(requested: Any = None) -> dict[str, Any]:
    """VERSION's output: written in the requested version when this plugin speaks it."""
    version = requested if requested in SUPPORTED_VERSIONS else LATEST
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
