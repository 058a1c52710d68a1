"""picostim HIL: pytest plugin, OpenHTF-style measurements, JSON test records and HTML reports."""
