"""Environment -> frozen `Settings`, with errors that name the variable and the fix.

The variables are the contract in ../shared/ARCHITECTURE.md; every one of
them is documented in README.md (a test checks that).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import SettingsError, did_you_mean

# the interviews shipped in the package (bot/flows, a link to the repository's flows/
# in a checkout): found through importlib.resources, so a wheel install has them too
BUNDLED_FLOWS = Path(str(resources.files("bot") / "flows")).resolve()
DEFAULT_API_URL = "https://api.telegram.org"
DEFAULT_LISTEN = "127.0.0.1:8080"  # loopback unless told otherwise (a proxy forwards to it)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Telegram's rule for secret_token: 1-256 characters A-Z, a-z, 0-9, _ and -
SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
MODES = ("polling", "webhook")
ENV_VARS = (
    "TELEGRAM_BOT_TOKEN", "TRIAGEBOT_API_URL", "TRIAGEBOT_DB", "TRIAGEBOT_MODE",
    "TRIAGEBOT_WEBHOOK_URL", "TRIAGEBOT_WEBHOOK_SECRET", "TRIAGEBOT_LISTEN", "TRIAGEBOT_FLOWS",
    "TRIAGEBOT_EMERGENCY_NUMBER", "TRIAGEBOT_RETENTION_DAYS", "TRIAGEBOT_STAFF_CHAT",
    "TRIAGEBOT_STAFF_CHATS", "TRIAGEBOT_ADMINS", "TRIAGEBOT_METRICS_TOKEN",
    "TRIAGEBOT_LOG_FORMAT", "TRIAGEBOT_BACKUP_DIR", "TRIAGEBOT_BACKUP_HOURS",
    "TRIAGEBOT_BACKUP_KEEP", "TRIAGEBOT_SEND_RATE", "TRIAGEBOT_CHAT_BURST",
    "TRIAGEBOT_BULK_RATE", "TRIAGEBOT_PAID_BROADCAST",
    "TRIAGEBOT_EMERGENCY_NUMBERS", "TRIAGEBOT_DEFAULT_LANGUAGE", "TRIAGEBOT_MISSING_TRANSLATIONS",
    "TRIAGEBOT_INTERVIEW_EXPIRY_HOURS", "TRIAGEBOT_CHECKINS", "TRIAGEBOT_TIMEZONE",
    "TRIAGEBOT_CHECKIN_STALE_HOURS", "TRIAGEBOT_NUDGE_HOURS", "TRIAGEBOT_START_TIMEOUT",
    "TRIAGEBOT_LOCAL", "TRIAGEBOT_ENV_FILE",
)
ENV_FILE = "triagebot.env"  # read from the working directory when TRIAGEBOT_ENV_FILE is unset
LOCAL_FILE = "local.yaml"  # the deployment overlay, likewise (TRIAGEBOT_LOCAL)
FOR_OTHERS = ("TRIAGEBOT_DOMAIN",)  # in deploy/env.example for Caddy; the bot ignores it
PATH_VARS = ("TRIAGEBOT_DB", "TRIAGEBOT_FLOWS", "TRIAGEBOT_LOCAL", "TRIAGEBOT_BACKUP_DIR")
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True, slots=True)
class Settings:
    token: str | None
    api_url: str
    db: Path
    mode: str
    webhook_url: str | None
    webhook_secret: str | None
    listen_host: str
    listen_port: int
    flows: Path
    emergency_number: str
    retention_days: float = 30.0
    staff_chat: int | None = None
    staff_chats: tuple[tuple[int, int], ...] = ()  # (source group, staff chat)
    admins: frozenset[int] = frozenset()
    metrics_token: str | None = None
    log_format: str = "text"
    backup_dir: Path | None = None
    backup_hours: float = 24.0
    backup_keep: int = 7
    # messages per second for the whole bot; None: no cap of ours, Telegram's 429s
    # say when to slow down (replies to people who wrote are not held to 30/s)
    send_rate: float | None = None
    chat_burst: int = 3  # messages a chat may get at once, then about one a second
    bulk_rate: float = 30.0  # proactive messages (check-ins, nudges) per second at most
    paid_broadcast: bool = False  # send proactive messages with allow_paid_broadcast
    emergency_numbers: tuple[tuple[str, str], ...] = ()  # (language, number) where it differs
    default_language: str = "en"  # when Telegram's language_code is not one the flow has
    allow_missing_translations: bool = False  # warn instead of refusing to start
    expiry_hours: float = 24.0  # an unfinished interview idle this long is closed (0: never)
    checkins: bool = True  # offer a check-in after a non-emergency outcome
    timezone: str = "UTC"  # IANA name, for "tomorrow morning"
    checkin_stale_hours: float = 12.0  # a check-in due this long ago (bot down) is dropped
    nudge_hours: float = 0.0  # one reminder after this long idle mid-interview (0: off)
    start_timeout: float = 60.0  # seconds to retry Telegram or a locked database at start
    local: Path | None = None  # the deployment overlay (local.yaml), if there is one
    db_url: str | None = None  # TRIAGEBOT_DB=postgresql://...: the PostgreSQL store
    emergency_set: bool = False  # TRIAGEBOT_EMERGENCY_NUMBER(S) given, not the default

    @property
    def db_name(self) -> str:
        """The database, as a log line may name it: a PostgreSQL URL without its password."""
        if self.db_url is None:
            return str(self.db)
        parts = urlsplit(self.db_url)
        return f"postgresql://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}" \
            f"{parts.path}"

    @property
    def loopback(self) -> bool:
        """The HTTP listener is reachable from this machine only."""
        return self.listen_host in LOOPBACK or self.listen_host.startswith("127.")

    def __repr__(self) -> str:  # the token and secret never reach a log
        return (f"Settings(mode={self.mode!r}, api_url={self.api_url!r}, "
                f"db={self.db_name!r}, flows={str(self.flows)!r}, "
                f"emergency_number={self.emergency_number!r}, "
                f"token={'set' if self.token else 'unset'})")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise `SettingsError` naming what to fix."""
    env = os.environ if env is None else env
    mode = env.get("TRIAGEBOT_MODE", "polling").strip().lower()
    if mode not in MODES:
        raise SettingsError(f"TRIAGEBOT_MODE={mode!r} is not a mode: use polling or webhook")
    listen = env.get("TRIAGEBOT_LISTEN", DEFAULT_LISTEN).strip()
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address: [::1]:8080
        host = host[1:-1]
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", host) or not re.fullmatch(r"[0-9]{1,5}", port) \
            or not 0 <= int(port) < 65536:
        raise SettingsError(f"TRIAGEBOT_LISTEN={listen!r} must be host:port, e.g. "
                            "127.0.0.1:8080, [::1]:8080, or 0.0.0.0:8080 for every interface")
    number = env.get("TRIAGEBOT_EMERGENCY_NUMBER", "112").strip()
    if not re.fullmatch(r"[0-9]{2,6}", number):
        raise SettingsError(f"TRIAGEBOT_EMERGENCY_NUMBER={number!r} must be the local "
                            "emergency number in digits, e.g. 112, 999 or 911")
    numbers = []
    for pair in filter(None, (p.strip() for p in
                              env.get("TRIAGEBOT_EMERGENCY_NUMBERS", "").split(","))):
        lang, sep, digits = (x.strip() for x in pair.partition("="))
        if not sep or not LANGUAGE_CODE.fullmatch(lang) or not re.fullmatch(r"[0-9]{2,6}",
                                                                             digits):
            raise SettingsError(f"TRIAGEBOT_EMERGENCY_NUMBERS entry {pair!r} must be "
                                "LANGUAGE=NUMBER, e.g. es=112,ar=997")
        numbers.append((lang, digits))
    default_language = env.get("TRIAGEBOT_DEFAULT_LANGUAGE", "en").strip().lower()
    if not LANGUAGE_CODE.fullmatch(default_language):
        raise SettingsError(f"TRIAGEBOT_DEFAULT_LANGUAGE={default_language!r} must be a "
                            "language code such as en, es, ru or ar")
    missing = env.get("TRIAGEBOT_MISSING_TRANSLATIONS", "error").strip().lower()
    if missing not in ("error", "warn"):
        raise SettingsError(f"TRIAGEBOT_MISSING_TRANSLATIONS={missing!r}: use error (refuse "
                            "to start) or warn (start; untranslated texts fall back to English)")
    flows = Path(env.get("TRIAGEBOT_FLOWS", str(BUNDLED_FLOWS)))
    if not flows.exists():
        raise SettingsError(f"TRIAGEBOT_FLOWS={str(flows)!r} does not exist: point it at the "
                            "folder of flow YAML files")
    retention_days = _number(env, "TRIAGEBOT_RETENTION_DAYS", 30.0, 1, 3650, "days")
    webhook_url = (env.get("TRIAGEBOT_WEBHOOK_URL") or "").strip() or None
    if webhook_url is not None:
        _check_webhook_url(webhook_url)
    if mode == "webhook" and webhook_url is None:
        raise SettingsError("webhook mode needs TRIAGEBOT_WEBHOOK_URL, the public https:// "
                            "address Telegram should call")
    webhook_secret = env.get("TRIAGEBOT_WEBHOOK_SECRET") or None
    if webhook_secret is not None and not SECRET.fullmatch(webhook_secret):
        raise SettingsError("TRIAGEBOT_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, "
                            "0-9, _ and - (Telegram's rule): make one with "
                            "`openssl rand -hex 32`")
    if mode == "webhook" and webhook_secret is None:
        raise SettingsError("webhook mode needs TRIAGEBOT_WEBHOOK_SECRET: without it anyone "
                            "who can reach the port could send updates as any person. Make "
                            "one with `openssl rand -hex 32`")
    staff_chat = _chat_id(env.get("TRIAGEBOT_STAFF_CHAT", ""), "TRIAGEBOT_STAFF_CHAT")
    staff_chats = []
    for pair in filter(None, (p.strip() for p in env.get("TRIAGEBOT_STAFF_CHATS", "").split(","))):
        group, sep, staff = pair.partition("=")
        if not sep:
            raise SettingsError(f"TRIAGEBOT_STAFF_CHATS entry {pair!r} must be GROUP_ID=STAFF_ID")
        staff_chats.append((_chat_id(group, "TRIAGEBOT_STAFF_CHATS"),
                            _chat_id(staff, "TRIAGEBOT_STAFF_CHATS")))
    admins = frozenset(_chat_id(a, "TRIAGEBOT_ADMINS")
                       for a in env.get("TRIAGEBOT_ADMINS", "").replace(" ", "").split(",") if a)
    log_format = env.get("TRIAGEBOT_LOG_FORMAT", "text").strip().lower()
    if log_format not in ("text", "json"):
        raise SettingsError(f"TRIAGEBOT_LOG_FORMAT={log_format!r}: use text or json")
    backup_hours = _number(env, "TRIAGEBOT_BACKUP_HOURS", 24.0, 0.01, 24 * 365, "hours")
    backup_keep = int(_number(env, "TRIAGEBOT_BACKUP_KEEP", 7, 1, 10_000, "copies", whole=True))
    backup_dir = env.get("TRIAGEBOT_BACKUP_DIR") or None
    send_rate = None if env.get("TRIAGEBOT_SEND_RATE", "").strip().lower() in ("", "off") \
        else _number(env, "TRIAGEBOT_SEND_RATE", 0, 0.01, 1e6, "messages per second")
    bulk_rate = _number(env, "TRIAGEBOT_BULK_RATE", 30.0, 0.01, 1e6, "messages per second")
    paid = env.get("TRIAGEBOT_PAID_BROADCAST", "off").strip().lower()
    if paid not in ("on", "off"):
        raise SettingsError(f"TRIAGEBOT_PAID_BROADCAST={paid!r}: use on or off")
    chat_burst = int(_number(env, "TRIAGEBOT_CHAT_BURST", 3, 1, 1e6, "messages", whole=True))
    expiry_hours = _number(env, "TRIAGEBOT_INTERVIEW_EXPIRY_HOURS", 24.0, 0, 24 * 365, "hours")
    checkins = env.get("TRIAGEBOT_CHECKINS", "on").strip().lower()
    if checkins not in ("on", "off"):
        raise SettingsError(f"TRIAGEBOT_CHECKINS={checkins!r}: use on or off")
    timezone = env.get("TRIAGEBOT_TIMEZONE", "UTC").strip()
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # (a folder: IsADirectoryError)
        raise SettingsError(f"TRIAGEBOT_TIMEZONE={timezone!r} is not a time zone: use an IANA "
                            "name such as Europe/London, America/Mexico_City or UTC") from None
    stale = _number(env, "TRIAGEBOT_CHECKIN_STALE_HOURS", 12.0, 0, 24 * 365, "hours")
    nudge = _number(env, "TRIAGEBOT_NUDGE_HOURS", 0.0, 0, 24 * 365, "hours")
    start_timeout = _number(env, "TRIAGEBOT_START_TIMEOUT", 60.0, 0, 3600, "seconds")
    db_url = (env.get("TRIAGEBOT_DB") or "").strip()
    if db_url.startswith(("postgresql://", "postgres://")):
        try:
            urlsplit(db_url).port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise SettingsError("TRIAGEBOT_DB is not a valid postgresql:// URL: e.g. "
                                "postgresql://triagebot@db.example.org:5432/triagebot") from None
    else:
        db_url = ""
    db_url = db_url or None  # type: ignore[assignment]
    local = (env.get("TRIAGEBOT_LOCAL") or "").strip()
    if local and not Path(local).is_file():
        raise SettingsError(f"TRIAGEBOT_LOCAL={local!r} is not a file: point it at your "
                            "local.yaml (`triagebot init` writes one), or unset it")
    local_path = Path(local) if local else (Path(LOCAL_FILE) if Path(LOCAL_FILE).is_file()
                                            else None)
    return Settings(
        token=env.get("TELEGRAM_BOT_TOKEN") or None,
        api_url=env.get("TRIAGEBOT_API_URL", DEFAULT_API_URL).rstrip("/"),
        db=Path("triagebot.sqlite3" if db_url else env.get("TRIAGEBOT_DB", "triagebot.sqlite3")),
        db_url=db_url,
        mode=mode,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        listen_host=host,
        listen_port=int(port),
        flows=flows,
        emergency_number=number,
        retention_days=retention_days,
        staff_chat=staff_chat,
        staff_chats=tuple(staff_chats),
        admins=admins,
        metrics_token=env.get("TRIAGEBOT_METRICS_TOKEN") or None,
        log_format=log_format,
        backup_dir=Path(backup_dir) if backup_dir else None,
        backup_hours=backup_hours,
        backup_keep=backup_keep,
        send_rate=send_rate,
        chat_burst=chat_burst,
        bulk_rate=bulk_rate,
        paid_broadcast=paid == "on",
        emergency_numbers=tuple(numbers),
        default_language=default_language,
        allow_missing_translations=missing == "warn",
        expiry_hours=expiry_hours,
        checkins=checkins == "on",
        timezone=timezone,
        checkin_stale_hours=stale,
        nudge_hours=nudge,
        start_timeout=start_timeout,
        local=local_path,
        emergency_set=bool((env.get("TRIAGEBOT_EMERGENCY_NUMBER") or "").strip() or
                           (env.get("TRIAGEBOT_EMERGENCY_NUMBERS") or "").strip()),
    )


def read_env_file(environ: dict[str, str] | os._Environ | None = None) -> Path | None:
    """Add the settings of an env file (TRIAGEBOT_ENV_FILE, else ./triagebot.env) to
    `environ` (os.environ): what the environment already sets wins, empty lines in the
    file mean unset, and a relative path in it is from the file's folder. The file
    holds the token, so it should be readable by its owner only."""
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    named = (environ.get("TRIAGEBOT_ENV_FILE") or "").strip()
    path = Path(named) if named else Path(ENV_FILE)
    if not path.is_file():
        if named:
            raise SettingsError(f"TRIAGEBOT_ENV_FILE={named!r} is not a file: point it at "
                                "your triagebot.env (`triagebot init` writes one)")
        return None
    try:
        values = dotenv_values(path, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read it ({exc})") from None
    for key, value in values.items():
        if key in FOR_OTHERS or not key.startswith(("TRIAGEBOT_", "TELEGRAM_")):
            continue  # another program's setting in a shared file
        if key not in ENV_VARS or key == "TRIAGEBOT_ENV_FILE":
            raise SettingsError(f"{path}: {key!r} is not a triagebot setting " +
                                did_you_mean(key, ENV_VARS, "(README, Settings)"))
        if value is None or not value.strip() or key in environ:
            continue
        if key in PATH_VARS and not Path(value).is_absolute():
            value = str(path.resolve().parent / value)
        environ[key] = value
    if values.get("TELEGRAM_BOT_TOKEN") and path.stat().st_mode & 0o077:
        print(f"triagebot: warning: {path} holds the bot token and others can read it: "
              f"chmod 600 {path}", file=sys.stderr)
    return path


def _check_webhook_url(url: str) -> None:
    """https, or plain http only to this machine (for tests; Telegram requires https)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        parts = None
    if parts is None or not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)):
        raise SettingsError(f"TRIAGEBOT_WEBHOOK_URL={url!r} must be the public https:// "
                            "address Telegram should call, e.g. https://bot.example.org/hook")


def _number(env: Mapping[str, str], name: str, default: float, lo: float, hi: float,
            unit: str, whole: bool = False) -> float:
    """A numeric setting in lo..hi, or a SettingsError that says so."""
    text = env.get(name, "").strip() or str(default)
    try:
        value = float(text)
        if not lo <= value <= hi or (whole and not value.is_integer()):
            raise ValueError
    except ValueError:
        kind = "a whole number of" if whole else "a number of"
        raise SettingsError(f"{name}={text!r} must be {kind} {unit} from {lo:g} to {hi:g}"
                            ) from None
    return value


def _chat_id(text: str, name: str) -> int | None:  # type: ignore[return]
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name}: {text!r} is not a Telegram chat or user id (a number such "
                            "as -1001234567890)") from None
