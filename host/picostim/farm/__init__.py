"""HIL rig farm on labgrid: each bench (DUT serial port + rig) is a labgrid place, exported by labgrid's exporter
(ser2net serves the serial ports over RFC 2217), locked and shared by labgrid's coordinator.

Modules: `benches` (bench lists, exporter configuration), `coordinator` (places: create, acquire, release, the
acquired place's rfc2217:// URLs), `virtual` (virtual benches: `picostim farm up`), `session` (the HIL suite on
acquired places: `picostim hil --lg-place`).
"""
