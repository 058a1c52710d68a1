"""`picostim keygen / lock / unlock`: the production lock (issue 14; picostim.auth, firmware/lib/lockcmd.py).

The station's last step is `picostim lock -p PORT`: the unit stores its own key (derived from the line secret and its
uid), its USB port then speaks the protocol alone (no REPL, Ctrl-C is data) and privileged requests (level table,
config, calibration, bootloader, unlock) need a MAC made with the key."""
from __future__ import annotations

import click

from . import main
from ._common import device_session, emit_json, friendly_errors, json_option, key_file_option, port_option, signer_for


@main.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="replace an existing key file (units locked with the old one then need it)")
@friendly_errors
def keygen(key_file, force):
    """Write a new line secret to KEY_FILE (mode 0600); prints its key id. Keep it at the station: every unit
    locked with it is opened only by it."""
    from ..auth import KeyFileError, keygen as make
    try:
        kid = make(key_file, force=force)
    except KeyFileError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{key_file}: new line secret, key id {kid}")


@main.command("lock")
@port_option
@key_file_option
@json_option
@friendly_errors
def lock(port, key_file, as_json):
    """Lock the unit (production mode): store its key, close the REPL, require the key for privileged changes."""
    signer = signer_for(key_file, required=True)
    with device_session(port, key_file=key_file) as (dev, _):
        dev.signer = signer
        st = dev.lock()
        uid = dev.info.get("uid")
    if as_json:
        emit_json({"uid": uid, "locked": st.get("locked"), "key_id": st.get("key_id")})
    else:
        click.echo(f"{uid}: locked (key id {st.get('key_id')}); verified with a signed request")


@main.command("unlock")
@port_option
@key_file_option
@json_option
@friendly_errors
def unlock(port, key_file, as_json):
    """Unlock the unit with the maker's key: it resets and comes back with its REPL (for a reflash; lock it again
    afterwards)."""
    signer = signer_for(key_file, required=True)
    with device_session(port, key_file=key_file) as (dev, _):
        dev.signer = signer
        before = dev.lock_state()
        hello = dev.unlock() if before.get("locked") else dev.hello()
    if as_json:
        emit_json({"uid": hello.get("uid"), "locked": hello.get("locked"), "was_locked": before.get("locked")})
    else:
        click.echo(f"{hello.get('uid')}: " + ("unlocked" if before.get("locked") else "was not locked"))
