"""openhosting-admin, run as an operator would."""

import re


def test_user_create_and_list(installation):
    out = installation.admin("user", "create", "--name", "carol").stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("user ") and out[1].startswith("secret ")
    uuid = out[0].split()[1]
    assert re.fullmatch(r"[0-9a-f-]{36}", uuid)
    assert f"{uuid} carol" in installation.admin("user", "list").stdout.splitlines()


def test_secret_is_not_stored(installation):
    out = installation.admin("user", "create").stdout.split()
    secret = out[out.index("secret") + 1]
    from sqlalchemy import create_engine, text

    engine = create_engine(installation.database_url)
    try:
        with engine.connect() as conn:
            rows = [r[0] for r in conn.execute(text("SELECT secret_hash FROM users"))]
    finally:
        engine.dispose()
    assert rows and all(secret not in r for r in rows)


def test_host_info(installation):
    info = dict(line.split(" ", 1) for line in installation.admin("host", "info").stdout.splitlines())
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["libvirt"]) and re.fullmatch(r"\d+\.\d+\.\d+", info["qemu"])
    expected = "kvm" if _hardware_virt() else "tcg"
    assert info["accelerator"] == expected
    assert int(info["cpus"]) >= 1
    assert int(info["pool:free"].split()[0]) > 0


def _hardware_virt() -> bool:
    from pathlib import Path

    flags = Path("/proc/cpuinfo").read_text()
    try:
        modules = Path("/proc/modules").read_text()
    except OSError:  # no module list (containers): no evidence of hardware KVM
        return False
    return (" vmx" in flags and "kvm_intel" in modules) or (" svm" in flags and "kvm_amd" in modules)
