"""Secrets never reach log output, whatever a record's logger is called: the CLI's handlers mask
every record, and the package roots (``charpack``, the HTTP and websocket libraries) mask their
modules' records before any handler sees them. The loggers here are on no list."""

from __future__ import annotations

import subprocess
import sys
import textwrap

POD = "https://abc123xyz-8188.proxy.runpod.net"
SECRET = "s3cr3t-9f2c7a1e"
NEW = "charpack.some.new.module"  # a module added after the redaction was written
VENDOR = "some_vendor.sdk"  # a library charpack never heard of


def _python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True
    )


def test_the_cli_handlers_mask_records_of_loggers_on_no_list() -> None:
    """Through the real ``charpack`` entry point and its logging set-up (``-v``): credentials in
    URLs and headers are masked before any secret is registered, known secrets after, and a
    traceback's text too."""
    result = _python(
        f"""
        import logging, sys
        from charpack.cli.main import app, main
        from charpack.comfy.auth import register_secret

        @app.command("leak")
        def leak() -> None:
            names = ({NEW!r}, {VENDOR!r}, "urllib3.connectionpool", "websocket")
            for name in names:
                logging.getLogger(name).debug("GET /view?token=%s", {SECRET!r})
                logging.getLogger(name).warning("sent Authorization: Bearer %s", {SECRET!r})
            register_secret({SECRET!r})
            for name in names:
                logging.getLogger(name).warning("server said %s", {SECRET!r})
            try:
                raise RuntimeError("echo " + {SECRET!r})
            except RuntimeError:
                logging.getLogger({NEW!r}).exception("failed")

        sys.argv = ["charpack", "-v", "leak"]
        main()
        """
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert SECRET not in out
    assert out.count("GET /view?token=***") == 4
    assert out.count("sent Authorization: Bearer ***") == 4
    assert out.count("server said ***") == 4
    assert "RuntimeError: echo ***" in out


def test_a_handler_added_later_gets_charpack_records_masked() -> None:
    """A script configures logging after the server: its handler has no redaction of its own,
    yet no record of a charpack module, urllib3 or the websocket library reaches it unmasked."""
    result = _python(
        f"""
        import logging
        from charpack.comfy.auth import ServerConfig
        ServerConfig.from_url({POD!r}, env={{"CHARPACK_TOKEN": {SECRET!r}}})
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
        logging.getLogger({NEW!r}).warning("request failed: %s", {SECRET!r})
        logging.getLogger("charpack").info("token %s", {SECRET!r})
        logging.getLogger("urllib3.connectionpool").debug("GET /x?token=%s", {SECRET!r})
        logging.getLogger("websocket._app").debug("handshake ?token=%s", {SECRET!r})
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"{NEW}: request failed: ***",
        "charpack: token ***",
        "urllib3.connectionpool: GET /x?token=***",
        "websocket._app: handshake ?token=***",
    ]


def test_a_script_without_logging_set_up_still_sees_warnings_masked() -> None:
    """With no handler configured, Python prints warnings on stderr (lastResort): they still
    appear, masked, for charpack modules and other libraries alike."""
    result = _python(
        f"""
        import logging
        import charpack
        logging.getLogger({NEW!r}).warning("sent Authorization: Bearer %s", {SECRET!r})
        logging.getLogger({VENDOR!r}).warning("GET /view?token=%s", {SECRET!r})
        logging.getLogger({NEW!r}).info("not shown: below lastResort's level")
        """
    )
    assert result.returncode == 0
    assert result.stderr == "sent Authorization: Bearer ***\nGET /view?token=***\n"
