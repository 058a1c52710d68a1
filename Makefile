# picostim: everything installs from the package registries into .venv (pinned in host/pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-fast demo bench clean hil

setup: $(STAMP)

$(STAMP): host/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e 'host[dev,farm]'
	# pyserial and labgrid's fork pyserial-labgrid both install `serial`; let the fork's files win whatever the
	# install order (its rfc2217 client does not renegotiate the port on every read timeout change)
	$(BIN)/pip install --force-reinstall --no-deps 'pyserial-labgrid==3.5.0.2' >/dev/null
	@command -v ser2net >/dev/null || test -x /usr/sbin/ser2net || \
		echo "note: ser2net is missing (apt-get install ser2net): the labgrid farm test will skip"
	touch $(STAMP)

# The whole suite: host + virtual board + firmware under the MicroPython unix port + HIL suite on the virtual board.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout 300 host/tests firmware/tests firmware/rig/tests
	$(BIN)/picostim hil --dut sim --quiet

demo: $(STAMP)
	$(BIN)/picostim demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build .pytest_cache hil-report
