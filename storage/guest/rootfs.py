"""Root file systems of the debootstrap guest images, described by the manifest (images.toml)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .cache import cache_dir, digest, locked, run, write_atomic
from .errors import BadManifest, BuildFailed, UnknownImage
from .initramfs import script
from .layer import install_layer, remove_tree, unmount_below

log = logging.getLogger("openhosting.storage.guest")

DEFAULT_SIZE = 2 * 1024**3
ROOT_INIT = "/sbin/openhosting-init"
# Bump when the overlay (init, shutdown, /etc files) changes meaning without its bytes changing.
_OVERLAY_VERSION = 2
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class ImageSpec:
    """One manifest entry with `extends` resolved: the full package list, links, sizes."""

    name: str
    description: str
    packages: tuple[str, ...]
    memory: int  # MiB
    size: int  # bytes of the root file system
    links: dict[str, str] = field(default_factory=dict)
    #: guest path -> (content, mode): the `files` of the manifest, read from beside it
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    extends: str | None = None   # the image whose tree this one's is a copy of (layer.py)
    own_packages: tuple[str, ...] = ()   # what the layer installs on top of `extends`
    warmup: str | None = None    # shell run in the template and every clone before runs (None: default)
    warm_clones: bool = True     # whether every pooled clone runs `warmup` too (else the default)
    tree: str = ""               # cache key of its tree (see _tree_key)


def manifest_path() -> Path:
    """$OPENHOSTING_IMAGES_MANIFEST, else the images.toml shipped next to this module."""
    configured = os.environ.get("OPENHOSTING_IMAGES_MANIFEST")
    if configured:
        return Path(configured)
    return Path(str(resources.files(__package__).joinpath("images.toml")))


def _size(text: object, path: Path, name: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", str(text).strip(), re.IGNORECASE)
    if not match:
        raise BadManifest(path=path, reason=f"image {name}: bad size {text!r}")
    return int(match[1]) * _UNITS[match[2].upper()]


def _file(manifest: Path, name: str, guest: str, source: object) -> tuple[bytes, int]:
    """A manifest `files` entry: the bytes of ``source`` (relative to the manifest's directory, and
    inside it) and 0755 when it is executable there, else 0644."""
    here = manifest.parent.resolve()
    where = (here / str(source)).resolve()
    if not guest.startswith("/") or not where.is_relative_to(here) or not where.is_file():
        raise BadManifest(path=manifest, reason=f"image {name}: bad file {guest!r} = {source!r}")
    return where.read_bytes(), 0o755 if os.access(where, os.X_OK) else 0o644


def load_manifest(path: Path | None = None) -> dict[str, ImageSpec]:
    """The manifest's images by name, in file order, with `extends` chains resolved.

    Raises BadManifest for unreadable TOML, unknown fields, missing parents or cycles.
    """
    path = Path(path) if path is not None else manifest_path()
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadManifest(path=path, reason=str(exc)) from None
    suite = os.environ.get("OPENHOSTING_DEBIAN_SUITE") or doc.get("suite", "bookworm")
    mirror = os.environ.get("OPENHOSTING_DEBIAN_MIRROR") or doc.get("mirror", "http://deb.debian.org/debian")
    common = list(doc.get("common_packages", []))
    entries = doc.get("images", {})
    known = {"description", "packages", "memory", "size", "links", "files", "extends", "warmup", "warm_clones"}
    for name, entry in entries.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
            raise BadManifest(path=path, reason=f"bad image name {name!r}")
        unknown = set(entry) - known
        if unknown:
            raise BadManifest(path=path, reason=f"image {name}: unknown fields {sorted(unknown)}")
        for table in ("links", "files"):
            if not isinstance(entry.get(table, {}), dict):
                raise BadManifest(path=path, reason=f"image {name}: {table} must be a table")

    def chain(name: str) -> list[dict]:
        seen, out = [], []
        while name is not None:
            if name in seen:
                raise BadManifest(path=path, reason=f"extends cycle {' -> '.join(seen + [name])}")
            if name not in entries:
                raise BadManifest(path=path, reason=f"image {seen[-1]} extends unknown image {name!r}")
            seen.append(name)
            out.insert(0, entries[name])
            name = entries[name].get("extends")
        return out

    def tree_key(name: str) -> str:
        """Debootstrap's inputs for a root image; its parent's key and its own packages for a layer."""
        entry = entries[name]
        if entry.get("extends") is None:
            every = dict.fromkeys(common + list(entry.get("packages", [])))
            return digest("minbase", suite, mirror, sorted(every))
        parent = entry["extends"]
        inherited = set(common) | {p for layer in chain(parent) for p in layer.get("packages", [])}
        own = [p for p in dict.fromkeys(entry.get("packages", [])) if p not in inherited]
        return digest("layer", tree_key(parent), sorted(own))

    specs = {}
    for name, entry in entries.items():
        packages, links, files, merged = list(common), {}, {}, {}
        for layer in chain(name):
            inherited = set(packages)
            packages += layer.get("packages", [])
            links.update(layer.get("links", {}))
            files.update(layer.get("files", {}))
            merged.update({k: v for k, v in layer.items() if k in ("memory", "size", "warmup", "warm_clones")})
        own = tuple(p for p in dict.fromkeys(entry.get("packages", [])) if p not in inherited)
        if "memory" not in merged:
            raise BadManifest(path=path, reason=f"image {name}: no memory")
        specs[name] = ImageSpec(
            name=name,
            description=entry.get("description", ""),
            packages=tuple(dict.fromkeys(packages)),
            memory=int(merged["memory"]),
            size=_size(merged["size"], path, name) if "size" in merged else DEFAULT_SIZE,
            links=links,
            files={guest: _file(path, name, guest, source) for guest, source in files.items()},
            suite=suite,
            mirror=mirror,
            extends=entry.get("extends"),
            own_packages=own,
            warmup=merged.get("warmup"),
            warm_clones=bool(merged.get("warm_clones", True)),
            tree=tree_key(name),
        )
    return specs


def get_spec(name: str) -> ImageSpec:
    specs = load_manifest()
    if name not in specs:
        raise UnknownImage(name=name)
    return specs[name]


# ---- debootstrap, cached ------------------------------------------------------------------------

def _tree_key(spec: ImageSpec) -> str:
    return spec.tree


def debootstrap_tree(spec: ImageSpec) -> Path:
    """The tree of an image, built once and cached in <cache>/debootstrap/<key>/.

    An image without `extends`: debootstrap of the suite with its packages. An image that extends
    another: a copy of the parent's tree (built first) with its own packages installed (layer.py).
    Downloaded packages are kept in <cache>/debs/ for every tree. Needs root (chroot).
    """
    if os.geteuid() != 0:
        raise BuildFailed(step="debootstrap", detail="building a root file system needs root")
    parent = debootstrap_tree(get_spec(spec.extends)) if spec.extends is not None else None
    base = cache_dir() / "debootstrap"
    tree = base / _tree_key(spec)
    done = base / f"{tree.name}.complete"  # beside the tree: mkfs -d copies everything inside it
    with locked(tree):
        if done.exists():
            return tree
        remove_tree(tree)
        tree.with_name(f"{tree.name}.links").unlink(missing_ok=True)
        debs = cache_dir() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            if parent is None:
                log.info("debootstrap %s (%s) into %s", spec.suite, ",".join(spec.packages), tree)
                run("debootstrap", ["debootstrap", "--variant=minbase", f"--include={','.join(spec.packages)}",
                                    f"--cache-dir={debs}", "--components=main", spec.suite, tree, spec.mirror],
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})
            else:
                log.info("layer %s (%s) on %s into %s", spec.name, ",".join(spec.own_packages), parent, tree)
                with locked(parent):
                    install_layer(parent, tree, list(spec.own_packages), debs)
        except BaseException:
            remove_tree(tree)
            raise
        unmount_below(tree)
        done.write_text(json.dumps({"packages": spec.packages, "suite": spec.suite, "mirror": spec.mirror,
                                    "extends": spec.extends, "seconds": round(time.monotonic() - started, 1)}))
        log.info("tree of %s took %.1f s", spec.name, time.monotonic() - started)
    return tree


# ---- the overlay: what makes a Debian tree a guest image ----------------------------------------

def _inside(tree: Path, path: str) -> Path:
    """`path` of the guest resolved inside `tree` as a chroot would: symlinks never leave it.

    The last component is not followed (the caller replaces it); its parents are.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while len(parts) > 1:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = tree.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise BuildFailed(step="image overlay", detail=f"symlink loop at {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
        else:
            resolved.append(part)
    return tree.joinpath(*resolved, *parts)


def _put(tree: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    target = _inside(tree, path)
    if target.is_symlink():
        target.unlink()  # never write through a link: it may point at the host's file of that name
    write_atomic(target, data, mode)


def _link(tree: Path, path: str, target: str) -> None:
    where = _inside(tree, path)
    where.parent.mkdir(parents=True, exist_ok=True)
    if where.is_symlink() or where.exists():
        if where.is_symlink() and os.readlink(where) == target:
            return
        where.unlink()
    where.symlink_to(target)


def _apply_links(tree: Path, links: dict[str, str]) -> None:
    """Make the image's links, and remove those an earlier image sharing this tree made."""
    record = tree.with_name(f"{tree.name}.links")
    try:
        previous = json.loads(record.read_text())
    except (OSError, ValueError):
        previous = {}
    for path in set(previous) - set(links):
        where = _inside(tree, path)
        if where.is_symlink() and os.readlink(where) == previous[path]:
            where.unlink()
    for path, target in links.items():
        _link(tree, path, target)
    record.write_text(json.dumps(links))


def _overlay(spec: ImageSpec) -> dict[str, tuple[bytes, int]]:
    shutdown = script("shutdown.sh").encode()
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    files = {
        ROOT_INIT: (script("root-init.sh").encode(), 0o755),
        "/etc/hostname": (f"{spec.name}\n".encode(), 0o644),
        "/etc/hosts": (hosts.encode(), 0o644),
        # the build host's resolver means nothing inside a guest
        "/etc/resolv.conf": (b"", 0o644),
        "/etc/fstab": (b"# mounts are made by /sbin/openhosting-init\n", 0o644),
    }
    for name in ("shutdown", "poweroff", "halt", "reboot"):
        files[f"/sbin/{name}"] = (shutdown, 0o755)
    files.update(spec.files)
    return files


def rootfs_key(spec: ImageSpec) -> str:
    """Identifies a root file system's content: debootstrap inputs, overlay, links and size."""
    # surrogateescape: a binary file of `files` keys by its bytes too (text keys as before)
    overlay = {path: [data.decode(errors="surrogateescape"), mode] for path, (data, mode) in _overlay(spec).items()}
    return digest(_OVERLAY_VERSION, _tree_key(spec), overlay, spec.links, spec.size)


def _stamp(dest: Path) -> Path:
    return dest.with_name(dest.name + ".stamp")


def is_current(spec: ImageSpec, dest: Path) -> bool:
    """Whether `dest` holds the root file system of `spec` as this code would build it now."""
    try:
        return Path(dest).exists() and json.loads(_stamp(Path(dest)).read_text())["key"] == rootfs_key(spec)
    except (OSError, ValueError, KeyError):
        return False


def build_rootfs(name: str, dest: Path) -> Path:
    """Build the ext4 root file system of manifest image `name` at `dest` (a sparse file); returns it.

    Idempotent: when `dest` is already current (see is_current) nothing is done, and the
    debootstrap step is cached across images and output directories. The image is written next
    to `dest` and renamed over it, so running VMs' overlays never see a half-built base.
    """
    spec = get_spec(name)
    dest = Path(dest).absolute()
    with locked(dest):
        if is_current(spec, dest):
            return dest
        tree = debootstrap_tree(spec)
        with locked(tree):
            for path, (data, mode) in _overlay(spec).items():
                _put(tree, path, data, mode)
            _apply_links(tree, spec.links)
            # packages are cached in <cache>/debs; copies inside the image would only take space
            for leftover in (tree / "var/cache/apt/archives").glob("*.deb"):
                leftover.unlink()
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            tmp.unlink(missing_ok=True)
            started = time.monotonic()
            try:
                run("mkfs.ext4", ["mkfs.ext4", "-q", "-F", "-t", "ext4", "-L", spec.name[:16], "-m", "0",
                                  "-d", tree, tmp, str(spec.size // 1024) + "k"])
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            log.info("mkfs.ext4 -d took %.1f s", time.monotonic() - started)
        write_atomic(_stamp(dest), json.dumps({"key": rootfs_key(spec), "image": name}).encode())
    return dest
