"""Trees of images that `extend` another: a copy of the parent's tree plus the image's own packages.

    parent tree ──cp -a --reflink=auto──► child tree ──chroot apt-get install (cached debs)──► child tree

A fresh debootstrap per image unpacks and configures every package of minbase again (about 40 s on
this machine before a single package of the image's own); a layer pays only for its own packages.
apt inside the copy resolves the dependencies from the package lists debootstrap left in the tree
(the parent's, so a layer installs the same versions its parent was built from) and reads and
writes the shared .deb cache (bind-mounted over /var/cache/apt/archives), so a second build, or a
sibling that shares dependencies, downloads nothing. When the lists name a version the mirror no
longer has, `apt-get update` refreshes them and the install is tried once more.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .cache import run
from .errors import BuildFailed

log = logging.getLogger("openhosting.storage.guest")

_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C",
        "HOME": "/root"}
# no service starts inside the build chroot (invoke-rc.d asks this script)
_POLICY = b"#!/bin/sh\nexit 101\n"


def unmount_below(path: Path) -> None:
    """Unmount whatever a build left mounted inside `path`, deepest first.

    Removing a tree with /proc still mounted in it would walk into the host's /proc.
    """
    prefix = str(Path(path).resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        run("unmount", ["umount", "-l", point])


def remove_tree(path: Path) -> None:
    if Path(path).exists():
        unmount_below(path)
        shutil.rmtree(path)


def _apt(tree: Path, *args: str) -> None:
    run("apt-get", ["chroot", tree, "apt-get", "-q", "-y", "-o", "APT::Sandbox::User=root",
                    "-o", "Dpkg::Use-Pty=0", *args], env=_ENV)


def install_layer(parent: Path, tree: Path, packages: list[str], debs: Path) -> None:
    """Make `tree` a copy of `parent` with `packages` (and their dependencies) installed.

    Needs root (chroot, bind mounts). On failure the caller removes `tree` (see remove_tree).
    """
    if os.geteuid() != 0:
        raise BuildFailed(step="layer", detail="building a root file system needs root")
    run("copy tree", ["cp", "-a", "--reflink=auto", parent, tree])
    archives = tree / "var/cache/apt/archives"
    archives.mkdir(parents=True, exist_ok=True)
    policy = tree / "usr/sbin/policy-rc.d"
    resolv = tree / "etc/resolv.conf"
    saved_resolv = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else b""
    try:
        run("mount", ["mount", "-t", "proc", "proc", tree / "proc"])
        run("mount", ["mount", "--bind", debs, archives])
        policy.write_bytes(_POLICY)
        policy.chmod(0o755)
        if resolv.is_symlink():
            resolv.unlink()
        # apt may need the mirror (below); the guest's own resolv.conf is put back afterwards
        shutil.copyfile("/etc/resolv.conf", resolv)
        install = ["install", "--no-install-recommends", *packages]
        try:
            _apt(tree, *install)
        except BuildFailed as exc:
            log.info("installing %s from the tree's package lists failed (%s); updating them", packages,
                     str(exc.context.get("detail", ""))[-200:])
            _apt(tree, "update")
            _apt(tree, *install)
        # apt's binary caches of the package lists (about 70 MB) are rebuilt by apt when needed
        for cache in (tree / "var/cache/apt").glob("*.bin"):
            cache.unlink()
    finally:
        unmount_below(tree)
        policy.unlink(missing_ok=True)
        resolv.write_bytes(saved_resolv)
