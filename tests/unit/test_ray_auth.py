"""Token auth for the local Ray (token file 0600, explicit choices win), the exposure warning, and the
image's HAProxy stats rebinding, against Ray 2.60's real template."""

from __future__ import annotations

import os
import stat

import pytest

from ultrachat.ray_auth import auth_warning, enable_local_token_auth, is_loopback
from ultrachat.serving.haproxy_stats import LOOPBACK, bind_stats_to_loopback, template_path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private HOME and no token in the environment: what a user's shell looks like."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_machine_gets_token_mode_and_a_private_token_file(home):
    previous = os.umask(0)  # the most permissive umask: the modes must not come from it
    try:
        info = enable_local_token_auth()
    finally:
        os.umask(previous)
    token = home / ".ray" / "auth_token"
    assert info == {"mode": "token", "token_from": str(token), "token_file_mode": "0600"}
    assert _mode(token) == 0o600 and _mode(token.parent) == 0o700
    assert len(token.read_text()) == 64 and int(token.read_text(), 16)  # 32 random bytes, hex
    assert os.environ["RAY_AUTH_MODE"] == "token"
    first = token.read_text()
    enable_local_token_auth()
    assert token.read_text() == first  # reused: a second job joins the same token, not a new one


def test_a_world_readable_token_file_is_tightened(home, caplog):
    token = home / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a" * 64)
    token.chmod(0o644)  # what Ray 2.60 writes under the usual umask
    enable_local_token_auth()
    assert _mode(token) == 0o600 and token.read_text() == "a" * 64
    assert "readable by other users: now 0600" in caplog.text


def test_token_path_env_is_honoured(home, monkeypatch, tmp_path):
    target = tmp_path / "elsewhere" / "token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(target))
    assert enable_local_token_auth()["token_from"] == str(target)
    assert _mode(target) == 0o600 and not (home / ".ray" / "auth_token").exists()


def test_explicit_choices_win(home, monkeypatch, caplog):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    assert enable_local_token_auth() == {"mode": "token", "token_from": "RAY_AUTH_TOKEN"}
    assert not (home / ".ray").exists()  # nothing written when the token is given
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert enable_local_token_auth() == {"mode": "disabled"}
    assert "token auth is off" in caplog.text
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    enable_local_token_auth()  # leave this process's Ray config (re-read above) as the suite runs it


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:6379", True), ("localhost:8265", True), ("http://127.0.0.1:8265", True), ("[::1]:6379", True),
    ("10.0.3.4:6379", False), ("http://ultrachat-head-svc:8265", False), ("0.0.0.0:8265", False),
])
def test_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_auth_off_beyond_loopback_is_warned_about():
    warning = auth_warning("disabled", "10.0.3.4:6379", "10.0.3.4:8265")
    assert warning and "OFF" in warning and "authOptions" in warning and "10.0.3.4:6379" in warning
    assert auth_warning("disabled", "127.0.0.1:6379", "127.0.0.1:8265") is None  # loopback only
    assert auth_warning("token", "10.0.3.4:6379", None) is None


def test_haproxy_stats_page_is_rebound_to_loopback_in_rays_own_template():
    original = template_path().read_text()
    if LOOPBACK.search(original):
        pytest.skip("this Ray's template is already patched (an image build ran here)")
    patched = bind_stats_to_loopback(original)
    changed = [(a, b) for a, b in zip(original.splitlines(), patched.splitlines()) if a != b]
    assert changed == [("  bind *:{{ config.stats_port }}", "  bind 127.0.0.1:{{ config.stats_port }}")]
    assert bind_stats_to_loopback(patched) == patched  # idempotent: a rebuilt layer is a no-op
    with pytest.raises(RuntimeError, match="template changed"):
        bind_stats_to_loopback(original.replace("listen stats", "listen statistics"))
