"""The guest-image builder: archive and manifest logic without VMs, then real boots under TCG.

Boot tests run plain qemu-system-x86_64 (q35, TCG): hypervisor/ is the only libvirt user, and these
tests prove the images themselves. Fixtures follow the lifecycle: image -> booted -> powered off.
"""

from __future__ import annotations

import base64
import gzip
import lzma
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from . import guestkit
import storage.guest as guest
from storage.errors import StorageError
from storage.guest import initramfs as initramfs_mod
from storage.guest import rootfs as rootfs_mod
from storage.guest.cpio import CpioWriter

BOOT_DEADLINE = 120  # seconds; TCG on a busy CI machine can be several times slower than here


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """Parse a newc archive: {name: (mode, data, (rdevmajor, rdevminor))}. The test's own reader."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    entries, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmajor, rminor, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos:pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body, (rmajor, rminor))


# ---- archives, kernel, modules: no VM ------------------------------------------------------------

names = st.lists(st.text("abcdefgh_.-0123456789", min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
                 min_size=1, max_size=3).map("/".join)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=600), max_size=12))
def test_cpio_round_trip(files):
    writer = CpioWriter()
    written = {}
    for name, data in files.items():
        # a file cannot also be a directory of another entry
        if any(other.startswith(name + "/") for other in files) or writer.exists(name):
            continue
        writer.add_file(name, data, 0o640)
        written[name] = data
    entries = read_cpio(writer.getvalue())
    for name, data in written.items():
        mode, body, _ = entries[name]
        assert body == data and stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o640
    for name in entries:
        assert name in written or stat.S_ISDIR(entries[name][0])


def test_cpio_is_what_the_cpio_tool_reads(tmp_path):
    writer = CpioWriter()
    writer.add_file("bin/tool", b"#!/bin/sh\n", 0o755)
    writer.add_symlink("bin/sh", "busybox")
    writer.add_char_device("dev/console", 5, 1)
    listing = subprocess.run(["cpio", "-itv"], input=writer.getvalue(), capture_output=True, check=True).stdout
    text = listing.decode()
    assert "bin/sh -> busybox" in text and "5,   1" in text and "-rwxr-xr-x" in text


def test_kernel_extraction_gives_a_pvh_elf_and_is_cached(tmp_path):
    vmlinuz = tmp_path / "vmlinuz-test"
    vmlinuz.write_bytes(guest.find_vmlinuz().read_bytes())
    started = time.monotonic()
    out = guest.extract_kernel(tmp_path / "out", vmlinuz)
    took = time.monotonic() - started
    print(f"kernel extraction: {took:.2f} s, {out.stat().st_size / 2**20:.0f} MiB")
    assert out.name == "vmlinux-test"
    assert out.read_bytes()[:4] == b"\x7fELF"
    assert guest.has_pvh_entry(out)
    assert not guest.has_pvh_entry(vmlinuz)
    mtime = out.stat().st_mtime_ns
    assert guest.extract_kernel(tmp_path / "out", vmlinuz) == out
    assert out.stat().st_mtime_ns == mtime  # cached
    future = time.time() + 10
    os.utime(vmlinuz, (future, future))
    guest.extract_kernel(tmp_path / "out", vmlinuz)
    assert out.stat().st_mtime_ns != mtime  # source newer: extracted again


def test_kernel_version_matches_installed_modules():
    version = guest.kernel_version()
    assert Path("/lib/modules", version).is_dir()
    assert guest.find_vmlinuz().name == f"vmlinuz-{version}"


def test_not_a_bzimage_is_refused(tmp_path):
    bogus = tmp_path / "vmlinuz-bogus"
    bogus.write_bytes(b"\0" * 4096)
    with pytest.raises(guest.KernelNotFound):
        guest.extract_kernel(tmp_path, bogus)


def test_modules_resolve_in_dependency_order():
    paths = [p.name.split(".ko")[0] for p in guest.resolve_modules(["ext4", "virtio_blk", "virtio_net"])]
    assert len(paths) == len(set(paths))
    for before, after in [("virtio_ring", "virtio_blk"), ("virtio", "virtio_blk"), ("jbd2", "ext4"),
                          ("mbcache", "ext4"), ("failover", "net_failover"), ("net_failover", "virtio_net")]:
        assert paths.index(before) < paths.index(after)
    with pytest.raises(guest.BuildFailed):
        guest.resolve_modules(["no_such_module_anywhere"])


def test_compressed_modules_are_stored_decompressed(tmp_path):
    module = guest.resolve_modules(["virtio_ring"])[0]
    packed = tmp_path / "virtio_ring.ko.xz"
    packed.write_bytes(lzma.compress(module.read_bytes(), check=lzma.CHECK_CRC32))
    assert initramfs_mod._read_module(packed) == module.read_bytes()


def test_initramfs_contents(tmp_path):
    dest = tmp_path / "initrd.gz"
    init = "#!/bin/sh\necho hello\n"
    guest.build_initramfs(dest, init, extra_files={"/etc/motd": b"hi\n", "/sbin/poweroff": b"#!/bin/sh\n"})
    entries = read_cpio(dest.read_bytes())
    assert entries["init"][1] == init.encode() and entries["init"][0] & 0o111
    assert entries["etc/motd"] == (stat.S_IFREG | 0o644, b"hi\n", (0, 0))
    assert entries["sbin/poweroff"][1] == b"#!/bin/sh\n"  # extra files win over applet links
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"/bin/busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)
    order = entries["etc/oh-modules"][1].decode().split()
    assert [m.rsplit("/", 1)[1] for m in order].index("virtio_ring.ko") < \
        [m.rsplit("/", 1)[1] for m in order].index("virtio_pci.ko")
    for module in order:
        assert entries[module.lstrip("/")][1][:4] == b"\x7fELF"
    assert any(m.endswith("/vmw_vsock_virtio_transport.ko") for m in order)
    assert any(m.endswith("/sr_mod.ko") for m in order)
    print(f"initramfs: {dest.stat().st_size / 2**20:.1f} MiB gzip, {len(order)} modules")

    # deterministic: a rebuild leaves the file alone
    mtime = dest.stat().st_mtime_ns
    guest.build_initramfs(dest, init, extra_files={"/etc/motd": b"hi\n", "/sbin/poweroff": b"#!/bin/sh\n"})
    assert dest.stat().st_mtime_ns == mtime


def test_boot_initramfs_carries_the_boot_init(tmp_path):
    entries = read_cpio(guest.build_boot_initramfs(tmp_path / "boot.img").read_bytes())
    init = entries["init"][1].decode()
    assert "switch_root /newroot" in init and "/dev/vda" in init


# ---- manifest and overlay: no VM -------------------------------------------------------------------

def test_shipped_manifest_has_base():
    base = guest.load_manifest()["base"]
    assert {"python3", "qemu-guest-agent"} <= set(base.packages)
    assert base.links["/usr/bin/python"] == "python3"
    assert base.memory > 0 and base.size > 0 and base.description
    assert [image["name"] for image in guest.list_images()] == list(guest.load_manifest())


def test_manifest_extends_is_one_entry(tmp_path):
    manifest = tmp_path / "images.toml"
    manifest.write_text(
        'common_packages = ["qemu-guest-agent"]\n'
        '[images.base]\npackages = ["python3"]\nmemory = 256\nsize = "1G"\n'
        'links = { "/usr/bin/python" = "python3" }\n'
        '[images.node]\nextends = "base"\ndescription = "Node"\npackages = ["nodejs"]\nmemory = 384\n')
    node = guest.load_manifest(manifest)["node"]
    assert node.packages == ("qemu-guest-agent", "python3", "nodejs")
    assert node.memory == 384 and node.size == 2**30 and node.links == {"/usr/bin/python": "python3"}


def test_layers_key_on_their_parent_and_own_packages(tmp_path):
    manifest = tmp_path / "images.toml"
    text = ('common_packages = ["qemu-guest-agent"]\n'
            '[images.base]\npackages = ["python3"]\nmemory = 256\n'
            '[images.node]\nextends = "base"\npackages = ["nodejs", "python3"]\nmemory = 384\nwarmup = "node -e 1"\n'
            '[images.ts]\nextends = "node"\npackages = ["node-typescript"]\nmemory = 512\n')
    manifest.write_text(text)
    specs = guest.load_manifest(manifest)
    assert specs["node"].extends == "base" and specs["node"].own_packages == ("nodejs",)
    assert specs["ts"].own_packages == ("node-typescript",) and specs["ts"].warmup == "node -e 1"  # inherited
    assert specs["base"].warmup is None and specs["base"].extends is None
    assert len({spec.tree for spec in specs.values()}) == 3
    manifest.write_text(text.replace('packages = ["python3"]', 'packages = ["python3", "ruby"]'))
    changed = guest.load_manifest(manifest)
    assert all(changed[name].tree != specs[name].tree for name in specs)  # a new base: new layers on it


def test_manifest_files_are_read_from_beside_it_and_inherited(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "run-me").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "tools" / "run-me").chmod(0o755)
    (tmp_path / "tools" / "notes.txt").write_text("plain\n")
    manifest = tmp_path / "images.toml"
    manifest.write_text('[images.base]\nmemory = 256\n'
                        'files = { "/usr/local/bin/run-me" = "tools/run-me", "/etc/notes" = "tools/notes.txt" }\n'
                        '[images.child]\nextends = "base"\nmemory = 256\n')
    specs = guest.load_manifest(manifest)
    assert specs["child"].files == {"/usr/local/bin/run-me": (b"#!/bin/sh\necho hi\n", 0o755),
                                    "/etc/notes": (b"plain\n", 0o644)}
    before = rootfs_mod.rootfs_key(specs["child"])
    (tmp_path / "tools" / "notes.txt").write_text("changed\n")
    assert rootfs_mod.rootfs_key(guest.load_manifest(manifest)["child"]) != before   # the image is rebuilt


@pytest.mark.parametrize("entry", ['"/x" = "../outside"', '"/x" = "missing"', '"relative" = "ok"', '"/x" = "."'])
def test_manifest_files_outside_its_directory_or_missing_are_refused(tmp_path, entry):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "ok").write_text("ok")
    (tmp_path / "outside").write_text("secret")
    manifest = tmp_path / "m" / "images.toml"
    manifest.write_text(f"[images.a]\nmemory = 1\nfiles = {{ {entry} }}\n")
    with pytest.raises(guest.BadManifest):
        guest.load_manifest(manifest)


def test_shipped_language_images_are_layers_with_a_warmup():
    from controlplane.services.languages import RUNNABLE

    specs = guest.load_manifest()
    for lang in RUNNABLE.values():
        spec = specs[lang.image]
        assert spec.extends or spec.name == "base", spec.name
        assert spec.warmup or spec.name == "base", spec.name


@pytest.mark.parametrize("text", [
    '[images.a]\nmemory = 1\nextends = "b"\n[images.b]\nmemory = 1\nextends = "a"\n',
    '[images.a]\nmemory = 1\nextends = "nope"\n',
    '[images.a]\nmemory = 1\ncolour = "red"\n',
    '[images.a]\nmemory = 1\nsize = "lots"\n',
    '[images.a]\nmemory = 1\nfiles = "java/java-warm"\n',
    '[images.a]\npackages = []\n',
    '[images\n',
])
def test_bad_manifests_are_refused(tmp_path, text):
    manifest = tmp_path / "images.toml"
    manifest.write_text(text)
    with pytest.raises(guest.BadManifest):
        guest.load_manifest(manifest)


def test_unknown_image(tmp_path):
    with pytest.raises(guest.UnknownImage) as exc:
        guest.build_image("no-such-image", tmp_path)
    assert isinstance(exc.value, StorageError)


def test_overlay_never_writes_through_absolute_links(tmp_path):
    tree = tmp_path / "tree"
    outside = tmp_path / "host-file"
    outside.write_text("host")
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "sbin").symlink_to("usr/sbin")
    (tree / "usr/sbin/shutdown").symlink_to(outside)  # as if it pointed at the host's /bin/systemctl
    (tree / "var").mkdir()
    (tree / "var/run").symlink_to("/run")  # absolute: means the guest's /run, not the host's
    rootfs_mod._put(tree, "/sbin/shutdown", b"#!/bin/sh\n", 0o755)
    assert outside.read_text() == "host"
    assert (tree / "usr/sbin/shutdown").read_bytes() == b"#!/bin/sh\n"
    assert rootfs_mod._inside(tree, "/var/run/lock") == tree / "run/lock"


def test_links_of_an_earlier_image_sharing_the_tree_are_removed(tmp_path):
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    rootfs_mod._apply_links(tree, {"/usr/bin/python": "python3", "/usr/bin/py": "python3"})
    assert os.readlink(tree / "usr/bin/py") == "python3"
    rootfs_mod._apply_links(tree, {"/usr/bin/python": "python3"})
    assert not (tree / "usr/bin/py").is_symlink()
    assert os.readlink(tree / "usr/bin/python") == "python3"


# ---- the test guest, booted -------------------------------------------------------------------------

@pytest.mark.vm
def test_direct_kernel_boot_dhcp_and_acpi_shutdown(tmp_path):
    args = ["-kernel", str(guestkit.guest_kernel()), "-initrd", str(guestkit.build_test_initramfs()),
            "-append", guestkit.guest_cmdline(), "-nic", "user,model=virtio-net-pci"]
    with guestkit.Qemu(tmp_path, args) as vm:
        vm.wait_for(guestkit.GUEST_UP, BOOT_DEADLINE)
        up = vm.elapsed()
        address = vm.wait_for(r"OPENHOSTING-IP (\S+)\r?\n", 60)[1]  # whole line: the console arrives in pieces
        assert address == "10.0.2.15"  # QEMU user networking's first lease
        assert "error" not in vm.qmp("system_powerdown")
        assert vm.wait_exit(60) == 0
        assert "OPENHOSTING-POWEROFF acpi" in vm.console()
    print(f"direct kernel boot (vmlinux, PVH): marker after {up:.1f} s")


@pytest.mark.vm
def test_uncompressed_kernel_against_bzimage(tmp_path):
    """Why extract_kernel exists: the same guest, booted from the bzImage and from its vmlinux."""
    initramfs = str(guestkit.build_test_initramfs())
    times = {}
    for label, kernel in (("bzImage", guest.find_vmlinuz()), ("vmlinux", guestkit.guest_kernel())):
        args = ["-kernel", str(kernel), "-initrd", initramfs, "-append", guestkit.guest_cmdline(0)]
        with guestkit.Qemu(tmp_path / label, args) as vm:
            vm.wait_for(guestkit.GUEST_UP, BOOT_DEADLINE)
            times[label] = vm.elapsed()
            assert vm.wait_exit(60) == 0
    print(f"direct boot to marker: bzImage {times['bzImage']:.1f} s, vmlinux {times['vmlinux']:.1f} s")


@pytest.mark.vm
def test_iso_boots_as_cdrom_and_powers_itself_off(tmp_path):
    iso = guestkit.build_test_iso(poweroff_after=2)
    args = ["-drive", f"file={iso},media=cdrom,if=ide,readonly=on", "-boot", "order=d"]
    with guestkit.Qemu(tmp_path, args) as vm:
        vm.wait_for(guestkit.GUEST_UP, BOOT_DEADLINE)
        up = vm.elapsed()
        assert vm.wait_exit(60) == 0
        assert "OPENHOSTING-POWEROFF timer" in vm.console()
    print(f"ISO (isolinux, bzImage): marker after {up:.1f} s, exited after {vm.elapsed():.1f} s")


@pytest.mark.vm
def test_raw_disk_boots_and_powers_itself_off(tmp_path):
    disk = guestkit.build_test_disk(tmp_path / "disk.img", poweroff_after=2)
    assert disk.stat().st_blocks * 512 < disk.stat().st_size  # delivered sparse
    args = ["-drive", f"file={disk},format=raw,if=virtio"]
    with guestkit.Qemu(tmp_path, args) as vm:
        vm.wait_for(guestkit.GUEST_UP, BOOT_DEADLINE)
        up = vm.elapsed()
        assert vm.wait_exit(60) == 0
        assert "OPENHOSTING-POWEROFF timer" in vm.console()
    print(f"raw disk (syslinux, bzImage): marker after {up:.1f} s, exited after {vm.elapsed():.1f} s")


def test_test_guest_builds_are_cached():
    assert guestkit.build_test_iso(poweroff_after=2) == guestkit.build_test_iso(poweroff_after=2)
    assert guestkit.build_test_iso(poweroff_after=2) != guestkit.build_test_iso()
    assert guestkit.build_test_disk() == guestkit.build_test_disk()


# ---- the debootstrap image, built and booted ---------------------------------------------------------

@pytest.fixture(scope="session")
def base_image():
    """The `base` image, built into the cache (about 40 s the first time, well under 1 s after)."""
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    started = time.monotonic()
    image = guest.build_image("base", guest.cache_dir() / "test-images")
    print(f"build_image('base'): {time.monotonic() - started:.1f} s")
    return image


@pytest.mark.vm
def test_base_image_build_is_idempotent(base_image):
    before = base_image["rootfs"].stat()
    again = guest.build_image("base", base_image["rootfs"].parent)
    assert again["rootfs"] == base_image["rootfs"]
    after = again["rootfs"].stat()
    # a second build finds the first: the file system is not rewritten
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert guest.list_images(base_image["rootfs"].parent)[0]["built"]
    assert base_image["memory"] == 256 and base_image["description"]


@pytest.mark.vm
def test_base_image_boots_and_runs_python_through_the_agent(base_image, tmp_path):
    overlay = tmp_path / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base_image["rootfs"]),
                    str(overlay)], check=True)
    agent_socket = tmp_path / "agent.sock"
    args = ["-kernel", str(base_image["kernel"]), "-initrd", str(base_image["initramfs"]),
            "-append", base_image["cmdline"], "-drive", f"file={overlay},format=qcow2,if=virtio",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=agent,path={agent_socket},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=org.qemu.guest_agent.0"]
    with guestkit.Qemu(tmp_path, args, memory=base_image["memory"]) as vm:
        while not agent_socket.exists():
            assert vm.elapsed() < 10, "qemu did not create the agent socket"
            time.sleep(0.02)
        agent = guestkit.GuestAgent(agent_socket)
        try:
            agent.wait_ready(BOOT_DEADLINE)
            ready = vm.elapsed()
            assert agent.call("guest-ping") == {}

            def run(path, *args):
                started = time.monotonic()
                pid = agent.call("guest-exec", path=path, arg=list(args), **{"capture-output": True})["pid"]
                while not (status := agent.call("guest-exec-status", pid=pid))["exited"]:
                    assert time.monotonic() - started < 60
                    time.sleep(0.02)
                return status, time.monotonic() - started

            status, first = run("python3", "-c", "print(1+1)")
            assert status["exitcode"] == 0
            assert base64.b64decode(status["out-data"]) == b"2\n"
            status, warm = run("python", "-c", "import sys; print(sys.version_info[0])")
            assert base64.b64decode(status["out-data"]) == b"3\n"
            assert "OPENHOSTING-GUEST-UP" in vm.console()

            agent.send("guest-shutdown")
            assert vm.wait_exit(60) == 0
        finally:
            agent.close()
    print(f"base: agent ready {ready:.1f} s after qemu start; python3 first {first:.2f} s, "
          f"python warm {warm:.2f} s")
