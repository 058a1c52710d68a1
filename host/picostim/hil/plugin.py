"""pytest plugin for the picostim HIL suite (registered by the `pytest11` entry point `picostim`).

Only adds options and fixtures; nothing runs unless a test asks for the `dut`, `rig` or `measure` fixtures.
"""


def pytest_addoption(parser):
    group = parser.getgroup("picostim", "picostim HIL")
    group.addoption("--dut", default=None, help="DUT serial port, or sim[:board] for the virtual board")
    group.addoption("--rig", default=None, help="rig address (serial port / host:port), or sim")
    group.addoption("--hil-report", default="hil-report", help="directory for the JSON record and HTML report")
    group.addoption("--load", default=None, help="initial load for the virtual board (500, 2k, 10k, skin, open, short)")
