"""HIL suite fixtures on top of the picostim pytest plugin (dut, rig, measure, bench come from the plugin)."""
import pytest

import support


@pytest.fixture
def prof(dut):
    return support.profile_of(dut)


@pytest.fixture
def levels_ua(dut):
    """The DUT's level table (per device, may be field-tuned)."""
    return dut.levels_get()


@pytest.fixture
def restore_levels(dut):
    """Put the level table and config back after a test that changes them."""
    before_levels = dut.levels_get()
    before_cfg = dut.config_get()
    yield before_levels
    support.stop_quietly(dut)
    try:
        if dut.levels_get() != before_levels:
            dut.levels_set(before_levels, operator="hil-restore")
        cfg = {k: before_cfg[k] for k in ("session_s", "default_level", "default_program", "start_low") if k in before_cfg}
        if cfg:
            dut.config_set(cfg)
    except Exception:
        pass
