"""Server URLs and credentials: what users type and set, and that secrets never show."""

from __future__ import annotations

import base64
import logging

import pytest

from charpack.comfy.auth import ServerConfig, install_log_redaction, redact, redact_headers
from charpack.errors import ServerConfigError

POD = "https://abc123xyz-8188.proxy.runpod.net"
TOKEN = "tok-3f9a7c1e5b"


def test_bearer_token_from_environment() -> None:
    cfg = ServerConfig.from_url(POD, env={"CHARPACK_TOKEN": TOKEN})
    assert cfg.url == POD
    assert cfg.headers == {"Authorization": f"Bearer {TOKEN}"}
    assert dict(cfg.query) == {}
    assert cfg.ws_url(client_id="c1") == "wss://abc123xyz-8188.proxy.runpod.net/ws?clientId=c1"
    assert cfg.name == "abc123xyz-8188.proxy.runpod.net"


def test_query_token_goes_to_http_query_and_websocket_url() -> None:
    cfg = ServerConfig.from_url(
        "http://127.0.0.1:8188/", env={"CHARPACK_TOKEN": TOKEN, "CHARPACK_TOKEN_QUERY": "1"}
    )
    assert dict(cfg.headers) == {}
    assert dict(cfg.query) == {"token": TOKEN}
    assert cfg.ws_url(client_id="c1") == f"ws://127.0.0.1:8188/ws?clientId=c1&token={TOKEN}"


def test_basic_auth_and_path_prefix() -> None:
    cfg = ServerConfig.from_url(
        "https://gpu.example.org/comfy", env={"CHARPACK_BASIC_AUTH": "ana:s3cret pass"}
    )
    expected = base64.b64encode(b"ana:s3cret pass").decode()
    assert cfg.headers == {"Authorization": f"Basic {expected}"}
    assert cfg.ws_base == "wss://gpu.example.org/comfy/ws"


def test_credentials_in_the_url_are_moved_out_of_it() -> None:
    cfg = ServerConfig.from_url(f"https://ana:pw1234@h.example:8443/?token={TOKEN}", env={})
    assert cfg.url == "https://h.example:8443/"[:-1]
    assert cfg.headers["Authorization"].startswith("Basic ")
    assert dict(cfg.query) == {"token": TOKEN}
    assert "pw1234" not in repr(cfg) and TOKEN not in repr(cfg)


def test_token_query_and_basic_may_be_combined() -> None:
    env = {"CHARPACK_TOKEN": TOKEN, "CHARPACK_TOKEN_QUERY": "yes", "CHARPACK_BASIC_AUTH": "a:b"}
    cfg = ServerConfig.from_url(POD, env=env)
    assert cfg.headers["Authorization"].startswith("Basic ") and cfg.query["token"] == TOKEN


@pytest.mark.parametrize(
    ("url", "env", "words"),
    [
        ("abc-8188.proxy.runpod.net", {}, "https://abc-8188.proxy.runpod.net"),
        ("wss://abc-8188.proxy.runpod.net", {}, "give the http(s) URL"),
        ("ftp://host", {}, "not an http(s) URL"),
        (POD + "/?x=1", {}, "query parameters"),
        (POD, {"CHARPACK_TOKEN": TOKEN, "CHARPACK_BASIC_AUTH": "a:b"}, "CHARPACK_TOKEN_QUERY=1"),
        (POD, {"CHARPACK_TOKEN_QUERY": "1"}, "set CHARPACK_TOKEN"),
        (POD, {"CHARPACK_BASIC_AUTH": "justauser"}, "user:password"),
        (POD, {"CHARPACK_TOKEN": "two words"}, "whitespace"),
        (POD, {"CHARPACK_TOKEN": TOKEN, "CHARPACK_TOKEN_QUERY": "maybe"}, "set it to 1"),
        (POD + f"/?token={TOKEN}", {"CHARPACK_TOKEN": "x"}, "keep only one"),
    ],
)
def test_bad_urls_and_credentials_name_the_fix(url: str, env: dict[str, str], words: str) -> None:
    with pytest.raises(ServerConfigError) as caught:
        ServerConfig.from_url(url, env=env)
    assert words in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_secrets_never_in_repr_label_or_redacted_text() -> None:
    cfg = ServerConfig.from_url(POD, name="pod-a", env={"CHARPACK_TOKEN": TOKEN})
    basic = ServerConfig.from_url(POD, env={"CHARPACK_BASIC_AUTH": "ana:hunter2x"})
    encoded = basic.headers["Authorization"].split()[1]
    for text in (repr(cfg), cfg.label, str(cfg.auth_hint()), repr(basic)):
        assert TOKEN not in text and encoded not in text and "hunter2x" not in text
    message = f"GET {POD}/view?filename=a.png&token={TOKEN} failed; Authorization: Basic {encoded}"
    cleaned = redact(message)
    assert TOKEN not in cleaned and encoded not in cleaned
    assert "filename=a.png" in cleaned
    assert redact("https://u:hunter2x@h/x") == "https://u:***@h/x"
    assert redact_headers({"Authorization": "Bearer x", "Accept": "a"}) == {
        "Authorization": "***",
        "Accept": "a",
    }


def test_auth_hint_names_the_variable_to_set_or_check() -> None:
    assert "CHARPACK_TOKEN" in ServerConfig.from_url(POD, env={}).auth_hint()
    assert "CHARPACK_BASIC_AUTH" in ServerConfig.from_url(POD, env={}).auth_hint()
    hint = ServerConfig.from_url(POD, env={"CHARPACK_BASIC_AUTH": "a:b"}).auth_hint()
    assert "refused the credential from CHARPACK_BASIC_AUTH" in hint


def test_third_party_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    ServerConfig.from_url(POD, env={"CHARPACK_TOKEN": TOKEN})
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other code may have quietened it
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s',
        "https",
        "h",
        443,
        "GET",
        f"/x?token={TOKEN}",
        "HTTP/1.1",
        200,
        2,
    )
    logging.getLogger("charpack.comfy.stream").info("handshake to /ws?clientId=c&token=%s",
                                                         TOKEN)  # fmt: skip
    logging.getLogger("urllib3.util.retry").debug("Incremented Retry for (url='/q?token=%s')",
                                                  TOKEN)  # fmt: skip
    assert "/x?token=***" in caplog.text and "clientId=c&token=***" in caplog.text
    assert "/q?token=***" in caplog.text
    assert TOKEN not in caplog.text


def test_every_credential_from_the_environment_is_masked_in_every_form() -> None:
    # A server may echo any of them: the header, the request URL, the pod's model-host tokens.
    env = {
        "CHARPACK_TOKEN": "tk/q+8z=echo",
        "CHARPACK_BASIC_AUTH": "ana:pa55-w0rd",
        "RUNPOD_API_KEY": "rpa_KEY1234567",
        "CIVITAI_TOKEN": "civ-0a1b2c3d",
        "HF_TOKEN": "hf_abcdef123456",
        "CHARPACK_TOKEN_QUERY": "1",
    }
    ServerConfig.from_url(POD, env=env)
    basic = base64.b64encode(b"ana:pa55-w0rd").decode()
    forms = ["tk/q+8z=echo", "tk%2Fq%2B8z%3Decho", "ana:pa55-w0rd", "pa55-w0rd", basic,
             "rpa_KEY1234567", "civ-0a1b2c3d", "hf_abcdef123456"]  # fmt: skip
    for form in forms:
        echoed = f"upstream error; request was {form!r} (in the headers: {form})"
        assert form not in redact(echoed), form
        assert redact(echoed).startswith("upstream error; request was")


def test_records_of_any_logger_are_redacted_by_the_root_handlers() -> None:
    # The CLI installs its handlers on the root logger: whatever a record's logger is called
    # (a library charpack never heard of), the handler masks it.
    ServerConfig.from_url(POD, env={"CHARPACK_TOKEN": TOKEN})
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    root, handler = logging.getLogger(), Keep()
    root.addHandler(handler)
    try:
        install_log_redaction()
        logging.getLogger("someone.elses.library").warning("server said: Bearer %s", TOKEN)
        try:
            raise RuntimeError(f"echo {TOKEN}")
        except RuntimeError:
            logging.getLogger("another").exception("failed")
    finally:
        root.removeHandler(handler)
    assert len(seen) == 2 and seen[0] == "server said: ***"
    assert not [line for line in seen if TOKEN in line]
