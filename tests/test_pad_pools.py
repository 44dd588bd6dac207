"""OPENHOSTING_PAD_POOLS: warm VMs per pads language or image (the VM side: test_pads_run.py runs PHP
from a pool of zero)."""

from __future__ import annotations

import pytest

from controlplane.config import Settings, parse_pools
from controlplane.services.sandbox_runner import pool_size


def test_pool_sizes_per_language_and_image(tmp_path):
    settings = Settings.from_env({"OPENHOSTING_STATE_DIR": str(tmp_path), "OPENHOSTING_SANDBOX_POOL_SIZE": "3",
                                  "OPENHOSTING_PAD_POOLS": " python3=2, bash=1,go=0 ,c=1,gcc=4,rust=0"})
    assert settings.pad_pools == {"python3": 2, "bash": 1, "go": 0, "c": 1, "gcc": 4, "rust": 0}
    assert pool_size(settings, "base") == 2       # python3 and bash share it: the larger count
    assert pool_size(settings, "go") == 0
    assert pool_size(settings, "gcc") == 4        # named as an image beats its language c
    assert pool_size(settings, "rust") == 0
    assert pool_size(settings, "java") == 3       # not named: OPENHOSTING_SANDBOX_POOL_SIZE
    assert Settings.from_env({"OPENHOSTING_STATE_DIR": str(tmp_path)}).pad_pools == {}


@pytest.mark.parametrize("text", ["python3", "go=-1", "go=two", "=1", "Go=1", "go=1=2"])
def test_bad_pool_settings_are_refused(text):
    with pytest.raises(ValueError, match="OPENHOSTING_PAD_POOLS"):
        parse_pools(text)
