"""picostim: host toolkit for RP2040 microcurrent / EMS handhelds."""
__version__ = "0.1.0"
