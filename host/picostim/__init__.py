"""picostim: host toolkit for RP2040 microcurrent / EMS handhelds."""
__version__ = "0.1.0"


def __getattr__(name):
    # Public API without import cost for the CLI's fast paths: picostim.Device, picostim.deploy
    if name == "Device":
        from .device import Device
        return Device
    raise AttributeError(name)
