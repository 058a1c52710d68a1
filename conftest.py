"""Test-process set-up shared by every test directory under the repo root."""
import signal

# A suite started in the background by a non-interactive shell (`make test &`) inherits SIGINT ignored, and so would
# every command the tests start: the Ctrl-C tests (station, run --wait, monitor, tune, hil) would then send a signal
# nobody receives and fail on their timeouts. Ctrl-C is given back to the test processes and, through them, to the
# commands they run.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
