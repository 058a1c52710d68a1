"""Shared by the BOOTSEL stand-ins of the UF2 tests."""
from picostim import uf2


def copy_complete(path) -> bool:
    """The bootrom takes an image once every block has arrived: a copy still being written is not taken yet."""
    try:
        uf2.check_uf2(path)
        return True
    except (uf2.Uf2Error, OSError):
        return False
