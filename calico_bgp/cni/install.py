"""What `calico-bgp cni install` puts on a node: both plugins where a runtime looks for them, and a
conflist for this node, in the shape of Calico's install (cni-plugin/pkg/install/install.go writes
`10-calico.conflist` and the binaries into /opt/cni/bin).

`plan()` is pure: the files and their contents. A plugin is a small launcher that runs this
interpreter on the package it was installed from; the conflist carries Calico's field names, so
it reads as a Calico one. `write()` puts each file in place atomically (temporary file, rename).
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, Sequence

# plugin -> (module, function): calico-bgp-ipam starts in service.py, which hands the invocation to a
# warm service when the config asks for one and runs the IPAM plugin itself otherwise
PLUGINS = {"calico-bgp-cni": ("calico_bgp.cni.service", "cni_main"), "calico-bgp-ipam": ("calico_bgp.cni.service", "ipam_main")}
CONFLIST = "10-calico-bgp.conflist"
NETWORK = "calico-bgp"
DEFAULT_LOG = "/var/log/calico-bgp/cni.log"


class File(NamedTuple):
    path: str
    content: str
    mode: int


def conflist(node: str, endpoints: Sequence[str], prefix: str | None, *, ca_cert: str | None = None,
             cert: str | None = None, key: str | None = None, name: str = NETWORK, mtu: int | None = None,
             log_file: str | None = DEFAULT_LOG) -> dict[str, Any]:
    """The network configuration list a runtime on `node` reads (spec 1.1.0 and 1.0.0 runtimes alike)."""
    plugin: dict[str, Any] = {"type": "calico-bgp-cni", "log_level": "info", "datastore_type": "etcdv3",
                              "etcd_endpoints": ",".join(endpoints), "nodename": node,
                              "ipam": {"type": "calico-bgp-ipam", "assign_ipv4": "true", "assign_ipv6": "false"}}
    if log_file:
        plugin["log_file_path"] = log_file
    if mtu:
        plugin["mtu"] = mtu
    for field, value in (("etcd_ca_cert_file", ca_cert), ("etcd_cert_file", cert), ("etcd_key_file", key),
                         ("etcd_prefix", prefix)):
        if value:
            plugin[field] = value
    return {"name": name, "cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "plugins": [plugin]}


def launcher(module: str, python: str, paths: Sequence[str], function: str = "main") -> str:
    """A plugin executable: this interpreter without its site initialisation (-S: a plugin is exec'd
    per container, and site's .pth processing is a third of a bare start), with the package and its
    dependencies' directories named instead."""
    return (f"#!{python} -S\n# installed by `calico-bgp cni install`: a CNI plugin, run by a container runtime\n"
            f"import sys\nsys.path[:0] = {list(paths)!r}\nfrom {module} import {function}\n{function}()\n")


def plan(bin_dir: str, conf_dir: str, network: dict[str, Any], python: str, paths: Sequence[str]) -> list[File]:
    """The files: both plugins (run by `python` with `paths`: the package's root, then site-packages)."""
    files = [File(os.path.join(bin_dir, name), launcher(module, python, paths, function), 0o755)
             for name, (module, function) in PLUGINS.items()]
    files.append(File(os.path.join(conf_dir, CONFLIST), json.dumps(network, indent=2) + "\n", 0o644))
    return files


def python_paths(package_root: str) -> list[str]:
    """The package's root, then this interpreter's site-packages: what a -S launcher needs on sys.path."""
    import site

    return [package_root, *(p for p in site.getsitepackages() if os.path.isdir(p) and p != package_root)]


def unsafe_paths(paths: Sequence[str], package_root: str) -> list[str]:
    """What makes the launchers, which a runtime runs as root, run code another user can change: a
    directory on their sys.path, or one of this project's packages, that is not owned by root or
    that group or others may write (an editable install in a user's checkout is one). Each item
    names the directory and why."""
    import stat

    dirs = [*paths, *(os.path.join(package_root, p) for p in ("calico_bgp", "ipam", "dataplane"))]
    out = []
    for d in dict.fromkeys(dirs):
        try:
            st = os.stat(d)
        except OSError:
            continue
        if st.st_uid != 0:
            out.append(f"{d}: owned by uid {st.st_uid}, not root")
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            out.append(f"{d}: writable by {'group and others' if st.st_mode & stat.S_IWOTH else 'its group'}")
    return out


def write(files: Sequence[File]) -> None:
    """Each file in place, atomically: a runtime never reads half a conflist or runs half a plugin."""
    for f in files:
        os.makedirs(os.path.dirname(f.path) or ".", exist_ok=True)
        tmp = f"{f.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(f.content)
        os.chmod(tmp, f.mode)
        os.replace(tmp, f.path)
