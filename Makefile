# picostim: everything installs from the package registries into .venv (pinned in host/pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-fast demo bench clean hil

setup: $(STAMP)

EMU_JS := host/picostim/sim/emu/js

$(STAMP): host/pyproject.toml $(EMU_JS)/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e 'host[dev,farm]'
	# pyserial and labgrid's fork pyserial-labgrid both install `serial`; let the fork's files win whatever the
	# install order (its rfc2217 client does not renegotiate the port on every read timeout change)
	$(BIN)/pip install --force-reinstall --no-deps 'pyserial-labgrid==3.5.0.2' >/dev/null
	@command -v ser2net >/dev/null || test -x /usr/sbin/ser2net || \
		echo "note: ser2net is missing (apt-get install ser2net): the labgrid farm test will skip"
	# the emu engine's RP2040 emulator (rp2040js, pinned by package-lock.json); skipped where Node is absent
	if command -v npm >/dev/null; then npm ci --prefix $(EMU_JS) --no-audit --no-fund; else echo "npm not found: the emu engine is unavailable"; fi
	touch $(STAMP)

# The whole suite: host + virtual board + firmware under the MicroPython unix port + HIL suite on the virtual board.
# With $(PICOSTIM_MICROPYTHON_UF2) set (the RPI_PICO v1.28.0 UF2 from micropython.org) also the HIL modules issue 11
# names on the emulated chip: waveform, safety and persistence (README "HIL suite on emu" says why the rest is not).
EMU_HIL := test_waveform or test_persistence or test_safety
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout 300 host/tests firmware/tests firmware/rig/tests
	$(BIN)/picostim hil --dut sim --quiet
	@if [ -n "$$PICOSTIM_MICROPYTHON_UF2" ]; then \
		$(BIN)/picostim hil --engine emu --dut sim --quiet --report hil-report-emu -k "$(EMU_HIL)"; \
	else echo "emu HIL subset skipped: PICOSTIM_MICROPYTHON_UF2 is not set (MicroPython RPI_PICO v1.28.0 UF2)"; fi

demo: $(STAMP)
	$(BIN)/picostim demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build .pytest_cache hil-report hil-report-emu
