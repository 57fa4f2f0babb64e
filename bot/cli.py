"""`triagebot`: run | chat | validate | graph | eval — wiring and exit codes.

Exit codes: 0 fine; 1 the thing checked is not fine (flow problems, an unsafe
vignette run); 2 the command could not run (bad settings or arguments).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from bot import __version__, graph
from bot.engine import Engine
from bot.errors import FlowError, Problem, SettingsError, StoreInUse
from bot.flow import Flow
from bot.loader import flow_files, load_archive, load_flows, version_problems
from bot.local import Overlay, load_overlay
from bot.settings import BUNDLED_FLOWS, from_env, read_env_file
from bot.vignettes import VignetteError, load_vignettes, run_case, safe, summarize

if TYPE_CHECKING:
    from bot.conversation import Conversations

DEFAULT_FLOW = "back_pain_fever"


def _flows_dir() -> Path:
    return from_env().flows


def _load(paths: list[Path], allow_missing_translations: bool | None = None,
          ) -> dict[str, Flow]:
    """Every flow, or FlowError; warnings (allowed missing translations) go to stderr."""
    if allow_missing_translations is None:
        allow_missing_translations = from_env().allow_missing_translations
    flows, problems = load_flows(paths, allow_missing_translations=allow_missing_translations)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise FlowError(errors)
    _warn(problems)
    return flows


def _warn(problems: list) -> None:
    warnings = [p for p in problems if p.warning]
    for file, count in sorted(Counter(p.file for p in warnings).items()):
        print(f"{file}: warning: {count} text(s) not translated: they are shown in English "
              "(run `triagebot validate` for the list)", file=sys.stderr)


def _language(flow: Flow, lang: str) -> str:
    if lang not in flow.languages:
        raise SettingsError(f"flow '{flow.id}' has no language '{lang}': choose one of "
                            f"{', '.join(flow.languages)}")
    return lang


def _engine(flow: Flow, settings, overlay: Overlay | None = None) -> Engine:
    return Engine(flow, settings.emergency_number, dict(settings.emergency_numbers), overlay)


def _overlay(settings, flows) -> Overlay | None:
    """The deployment's local.yaml (TRIAGEBOT_LOCAL, else ./local.yaml), checked against
    the flows: FlowError with every problem; missing languages may be warnings."""
    if settings.local is None:
        return None
    overlay, problems = load_overlay(settings.local, flows,
                                     allow_missing=settings.allow_missing_translations)
    errors = [p for p in problems if not p.warning]
    if errors or overlay is None:
        raise FlowError(errors or problems)
    for problem in problems:
        print(f"{problem} (shown in English)", file=sys.stderr)
    if overlay.emergency and settings.emergency_set:
        mine = {"*": settings.emergency_number, **dict(settings.emergency_numbers)}
        clash = {k: v for k, v in overlay.emergency.items() if mine.get(k, mine["*"]) != v}
        if clash:  # two places for an emergency number: never guess which one is right
            raise SettingsError(f"{settings.local} sets emergency_number {clash} but "
                                "TRIAGEBOT_EMERGENCY_NUMBER(S) says otherwise: keep it in one "
                                "place")
    return overlay


def _served(flows: dict[str, Flow], settings, overlay: Overlay | None = None,
            ) -> dict[str, Engine]:
    """Every flow of TRIAGEBOT_FLOWS, the default first: the order /start offers them."""
    first = [DEFAULT_FLOW] if DEFAULT_FLOW in flows else []
    return {fid: _engine(flows[fid], settings, overlay)
            for fid in [*first, *sorted(set(flows) - set(first))]}


def _pick(flows: dict[str, Flow], wanted: str | None) -> Flow:
    if wanted and Path(wanted).suffix in (".yaml", ".yml") and Path(wanted).exists():
        return next(iter(_load([Path(wanted)]).values()))
    key = wanted or DEFAULT_FLOW
    if key not in flows:
        if not wanted and flows:  # no back_pain_fever: the first by id
            return flows[min(flows)]
        raise SettingsError(f"no flow '{key}': choose one of {', '.join(sorted(flows)) or '-'}")
    return flows[key]


def cmd_validate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] or [_flows_dir()]
    files = flow_files(paths)
    if not files:
        print(f"no flow files found in {', '.join(map(str, paths))}", file=sys.stderr)
        return 2
    allow = args.missing_translations == "warn" if args.missing_translations else \
        from_env().allow_missing_translations
    flows, problems = load_flows(files, allow_missing_translations=allow)
    problems += _locale_problems(flows.values(), allow)
    local = from_env().local  # the deployment overlay, checked against these flows
    overlay = None
    if local is not None:
        overlay, found = load_overlay(local, flows.values(), allow_missing=allow)
        problems += found
    for folder in dict.fromkeys(p.parent for p in files):
        archive, found = load_archive(folder, allow_missing_translations=allow)
        problems += found
        for flow in flows.values():
            if Path(flow.file).parent == folder:
                problems += version_problems(flow, archive)
    for problem in problems:
        print(problem)
    errors = [p for p in problems if not p.warning]
    if errors:
        print(f"{len(errors)} problem(s) in {len(files)} flow(s) and their translations",
              file=sys.stderr)
        return 1
    if problems:
        print(f"{len(problems)} warning(s): those texts are shown in English", file=sys.stderr)
    for flow in flows.values():
        print(f"{flow.file}: ok — flow '{flow.id}' v{flow.version}: {len(flow.nodes)} nodes, "
              f"{len(flow.rules)} rules, languages {', '.join(flow.languages)}")
    if overlay is not None:
        print(f"{overlay.file}: ok — {len(overlay.values)} local place(s) set, "
              f"{len(overlay.links)} link(s)" + (", emergency number" if overlay.emergency
                                                 else ""))
    return 0


def _locale_problems(flows, allow_missing: bool) -> list[Problem]:
    """The bot's own texts (bot/locales) for every language a flow speaks."""
    from bot.texts import LOCALES, load_texts

    locales = load_texts()
    found = []
    for lang in sorted({lang for flow in flows for lang in flow.languages} - {"en"}):
        where = str(LOCALES / f"{lang}.yaml")
        locale = locales.get(lang)
        if locale is None:
            found.append(Problem(where, 1, 1, "", f"no bot texts in '{lang}' (help, consent, "
                                 "privacy...)", "copy bot/locales/es.yaml and translate it",
                                 warning=allow_missing))
            continue
        found += [Problem(where, 1, 1, "", text) for text in locale.problems]
        found += [Problem(where, 1, 1, key, "missing translation", f"add `{key}:`",
                          warning=allow_missing) for key in locale.missing]
    return found


def cmd_chat(args: argparse.Namespace) -> int:
    from bot.chat import run_chat

    settings = from_env()
    flows = _load([settings.flows])
    flow = _pick(flows, args.flow)
    overlay = _overlay(settings, flows.values())
    colour = sys.stdout.isatty() if args.colour == "auto" else args.colour == "always"
    run_chat(_engine(flow, settings, overlay), input, sys.stdout, colour,
             _language(flow, args.lang), engines=_served(flows, settings, overlay))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    flow = _pick(_load([_flows_dir()]) if not Path(args.flow).exists() else {}, args.flow)
    sys.stdout.write(graph.mermaid(flow) if args.format == "mermaid" else graph.dot(flow))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    settings = from_env()
    flow = _pick(_load([settings.flows]), args.flow)
    engine = _engine(flow, settings)
    cases = load_vignettes(args.file, flow)
    languages = flow.languages if args.lang == "all" else (_language(flow, args.lang),)
    if len(languages) > 1:  # one summary per language; unsafe in any one fails
        ok = True
        for lang in languages:
            results = [run_case(engine, case, lang) for case in cases]
            summary = summarize(results)
            ok &= safe(summary)
            if args.json:
                print(json.dumps({"language": lang, "summary": summary}))
            else:
                print(f"--- {lang}")
                _print_table(results, summary)
        return 0 if ok else 1
    results = [run_case(engine, case, None if languages[0] == "en" else languages[0])
               for case in cases]
    summary = summarize(results)
    if args.json:
        print(json.dumps({
            "results": [{"id": r.vignette.id, "expected": r.vignette.expected.id,
                         "got": r.got.id, "fired_rules": list(r.fired),
                         "questions": r.questions, "correct": r.correct} for r in results],
            "summary": summary,
        }, indent=2))
    else:
        _print_table(results, summary)
    return 0 if safe(summary) else 1


def _print_table(results, summary) -> None:
    print(f"{'id':<10} {'expected':<10} {'got':<10} {'ok':<5} {'q':>3}  rules fired")
    for r in results:
        mark = "yes" if r.correct else ("UNDER" if r.under else "over")
        print(f"{r.vignette.id:<10} {r.vignette.expected.id:<10} {r.got.id:<10} {mark:<5} "
              f"{r.questions:>3}  {', '.join(r.fired) or '-'}")
    print()
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    print(f"vignettes: {summary['n']}   exact accuracy: {pct(summary['exact_accuracy'])}   "
          f"emergency sensitivity: {pct(summary['emergency_sensitivity'])} "
          f"({summary['emergency_correct']}/{summary['emergency_total']})")
    print(f"under-triage: {pct(summary['under_triage_rate'])} ({summary['under_triaged']}, "
          f"two levels: {summary['under_triage_two_levels']})   "
          f"over-triage: {pct(summary['over_triage_rate'])} ({summary['over_triaged']})   "
          f"risk averseness: {summary['risk_averseness']}")
    print("per-level accuracy: " + ", ".join(f"{k} {pct(v)}"
                                             for k, v in summary["per_level_accuracy"].items()))
    print(f"median questions to an outcome: {summary['median_questions']:g}")
    print("safety requirement: " + ("met" if safe(summary) else "NOT MET"))


def configure_logging(log_format: str) -> None:
    """Plain text, or one JSON object per line (with update id, time and level fields)."""
    import logging

    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
    from bot.logs import RateLimit

    handler.addFilter(RateLimit())  # no input can fill the disk with log lines
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def cmd_webhook(args: argparse.Namespace) -> int:
    """Manage the webhook by hand: set (from the settings), info, delete."""
    import asyncio

    from telegram import Bot

    from bot.telegram.app import ALLOWED_UPDATES

    settings = from_env()
    if not settings.token:
        raise SettingsError("TELEGRAM_BOT_TOKEN is not set")
    if args.action == "set" and not settings.webhook_url:
        raise SettingsError("set TRIAGEBOT_WEBHOOK_URL (and TRIAGEBOT_WEBHOOK_SECRET) first")

    async def act() -> str:
        async with Bot(settings.token, base_url=f"{settings.api_url}/bot") as bot:
            if args.action == "set":
                await bot.set_webhook(settings.webhook_url or "",
                                      secret_token=settings.webhook_secret,
                                      allowed_updates=ALLOWED_UPDATES)
                return f"webhook set to {settings.webhook_url}"
            if args.action == "delete":
                await bot.delete_webhook(drop_pending_updates=False)
                return "webhook deleted (pending updates kept for polling)"
            info = await bot.get_webhook_info()
            return "\n".join([f"url: {info.url or '(none: polling)'}",
                              f"pending updates: {info.pending_update_count}",
                              f"last error: {info.last_error_message or '-'}"])

    print(asyncio.run(act()))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """backup PATH | migrate | check — safe while the bot runs."""
    import asyncio

    from bot.store import maintenance

    settings = from_env()
    if args.action == "copy":  # SQLITE_PATH postgresql://...
        from bot.store.copy import copy

        if not args.path or not (args.target or "").startswith(("postgresql://",
                                                                 "postgres://")):
            raise SettingsError("say what to copy where: triagebot db copy SQLITE_PATH "
                                "postgresql://user@host:5432/db")
        counts = asyncio.run(copy(Path(args.path), args.target))
        print("copied and verified: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        return 0
    if args.action == "migrate":
        async def migrate() -> int:
            store = open_store(settings)
            await store.open()  # applies every pending migration
            try:
                return await store.migrate()
            finally:
                await store.close()
        print(f"{settings.db_name}: schema version {asyncio.run(migrate())}")
        return 0
    if settings.db_url:
        raise SettingsError(f"`db {args.action}` is for the SQLite file; on PostgreSQL use "
                            "its own tools (pg_dump for a backup, amcheck for a check)")
    if not settings.db.exists():
        raise SettingsError(f"no database at {settings.db}: set TRIAGEBOT_DB")
    if args.action == "backup":
        if not args.path:
            raise SettingsError("say where to write the backup: triagebot db backup PATH")
        made = maintenance.backup(settings.db, Path(args.path))
        ok, report = maintenance.check(made)
        print(f"backup written to {made}\n{report}")
        return 0 if ok else 1
    ok, report = maintenance.check(settings.db)
    print(report)
    return 0 if ok else 1


def build_conversations(settings, **more) -> Conversations:
    """The use case as `run` wires it: every flow of TRIAGEBOT_FLOWS (FlowError if any
    is broken), their kept older versions, and the settings."""
    from bot.conversation import Conversations

    flows = _load([settings.flows])
    overlay = _overlay(settings, flows.values())
    archive, _ = load_archive(settings.flows, allow_missing_translations=True)
    return Conversations(_engine(_pick(flows, None), settings, overlay),
                         engines=_served(flows, settings, overlay),
                         retention_days=settings.retention_days,
                         staff_chat=settings.staff_chat,
                         staff_chats=dict(settings.staff_chats),
                         default_language=settings.default_language,
                         expiry_hours=settings.expiry_hours,
                         checkins=settings.checkins, timezone=settings.timezone,
                         checkin_stale_hours=settings.checkin_stale_hours,
                         nudge_hours=settings.nudge_hours,
                         archive={key: _engine(old, settings, overlay)
                                  for key, old in archive.items() if key[0] in flows},
                         **more)


def cmd_init(args: argparse.Namespace) -> int:
    """Write a deployment folder: triagebot.env (every setting, explained) and local.yaml
    (the service's own wording, examples commented out). Never overwrites."""
    from importlib import resources

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for name, template, mode in (("triagebot.env", "triagebot.env", 0o600),
                                 ("local.yaml", "local.example.yaml", 0o644)):
        target = folder / name
        if target.exists():
            print(f"{target}: exists, left as it is", file=sys.stderr)
            continue
        text = (resources.files("bot") / "data" / template).read_text(encoding="utf-8")
        # created owner-only from the start: the env file will hold the bot token
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        made.append(str(target))
    if made:
        print("wrote " + " and ".join(made))
    where = "" if folder.resolve() == Path.cwd().resolve() else f"cd {folder} && "
    print(f"next: put your bot token in triagebot.env, then `{where}triagebot chat` to try "
          f"the interview here and `{where}triagebot run` to go live")
    return 0


def open_store(settings):
    """The store TRIAGEBOT_DB names: PostgreSQL for a postgresql:// URL, else SQLite."""
    if settings.db_url:
        from bot.store.postgres import PostgresStore

        return PostgresStore(settings.db_url)
    from bot.store.sqlite import SqliteStore

    return SqliteStore(settings.db)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from bot.telegram.app import StartupFailed, TelegramBot, run

    settings = from_env()
    conversations = build_conversations(settings)  # refuses to start on a broken flow
    if not settings.token:
        raise SettingsError("TELEGRAM_BOT_TOKEN is not set: get a token from @BotFather and "
                            "export it, or try the interview in the terminal with "
                            "`triagebot chat`")
    configure_logging(settings.log_format)
    for noisy in ("httpx", "httpcore", "telegram", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # one line per API call otherwise
    for lang, locale in conversations.locales.items():
        if locale.problems or locale.missing:
            logging.getLogger("triagebot").warning(
                "bot texts in %s: %d missing (shown in English), %s", lang,
                len(locale.missing), "; ".join(locale.problems) or "no other problems")
    bot = TelegramBot(settings, conversations, open_store(settings))
    try:
        asyncio.run(run(bot))
    except StartupFailed as exc:  # one clear line; systemd or Docker restart the bot
        print(f"triagebot: not started: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    """Post (and pin) the invitation with the deep-link button in a group or channel."""
    import asyncio

    from telegram import Bot

    settings = from_env()
    if not settings.token:
        raise SettingsError("TELEGRAM_BOT_TOKEN is not set: the invitation is sent as the bot")
    conversations = build_conversations(settings, token=settings.token)
    if args.flow and args.flow not in conversations.engines:  # before anything is posted
        raise SettingsError(f"no flow '{args.flow}' in TRIAGEBOT_FLOWS: choose one of "
                            f"{', '.join(conversations.engines)}")
    flow = conversations.engines[args.flow].flow if args.flow else conversations.engine.flow

    async def post() -> int:
        bot = Bot(settings.token, base_url=f"{settings.api_url}/bot")
        async with bot:
            conversations.username = bot.username
            lang = _language(flow, args.lang) if args.lang else settings.default_language
            (method, params), = conversations.invitation(args.chat, lang,
                                                         flow.id if args.flow else "")
            message = await bot.do_api_request(method, api_kwargs=params)
            if args.pin:
                await bot.pin_chat_message(args.chat, message["message_id"],
                                           disable_notification=True)
            return message["message_id"]

    message_id = asyncio.run(post())
    print(f"posted the invitation as message {message_id} in chat {args.chat}"
          + (" and pinned it" if args.pin else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Anonymised outcomes as CSV: day, source group, level, rules fired, questions asked."""
    import asyncio
    import csv
    import datetime as dt

    settings = from_env()
    try:
        since = dt.datetime.strptime(args.since, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SettingsError(f"--since {args.since!r}: use a date like 2026-01-31") from None
    if not settings.db_url and not settings.db.exists():
        raise SettingsError(f"no database at {settings.db}: set TRIAGEBOT_DB")

    async def rows() -> list[tuple]:
        store = open_store(settings)
        await store.open()
        try:
            return await store.export(since.timestamp())
        finally:
            await store.close()

    data = asyncio.run(rows())
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.out, "w", newline="", encoding="utf-8")) \
            if args.out else sys.stdout
        writer = csv.writer(out)
        writer.writerow(["date", "source_group", "level", "rules", "questions", "flow"])
        writer.writerows(data)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triagebot", description=(
        "Triage for back pain and fever. Not a doctor: every outcome says so."))
    parser.add_argument("--version", action="version", version=f"triagebot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="write a deployment folder: triagebot.env and "
                                       "local.yaml to start from")
    init.add_argument("dir", nargs="?", default=".", help="the folder (default: here)")
    init.set_defaults(func=cmd_init)

    run = sub.add_parser("run", help="run the bot on Telegram (settings from the environment)")
    run.set_defaults(func=cmd_run)

    chat = sub.add_parser("chat", help="the interview in this terminal")
    chat.add_argument("--flow", help=f"flow id (default {DEFAULT_FLOW})")
    chat.add_argument("--lang", default="en", help="language code (default en)")
    chat.add_argument("--colour", "--color", choices=("auto", "always", "never"),
                      default="auto")
    chat.set_defaults(func=cmd_chat)

    validate = sub.add_parser("validate", help="check flow files and print every problem")
    validate.add_argument("paths", nargs="*", help=f"files or folders (default {BUNDLED_FLOWS})")
    validate.add_argument("--missing-translations", choices=("error", "warn"),
                          help="untranslated texts are errors (default) or warnings "
                               "(default from TRIAGEBOT_MISSING_TRANSLATIONS)")
    validate.set_defaults(func=cmd_validate)

    graph_ = sub.add_parser("graph", help="draw a flow as Mermaid or DOT")
    graph_.add_argument("flow", help="flow id or YAML file")
    graph_.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph_.set_defaults(func=cmd_graph)

    webhook = sub.add_parser("webhook", help="set, show or delete the Telegram webhook")
    webhook.add_argument("action", choices=("set", "info", "delete"))
    webhook.set_defaults(func=cmd_webhook)

    db = sub.add_parser("db", help="backup PATH | migrate | check the database | "
                                   "copy SQLITE_PATH POSTGRES_URL")
    db.add_argument("action", choices=("backup", "migrate", "check", "copy"))
    db.add_argument("path", nargs="?", help="where to write the backup; what to copy")
    db.add_argument("target", nargs="?", help="copy: the empty PostgreSQL database's URL")
    db.set_defaults(func=cmd_db)

    invite = sub.add_parser("invite", help="post the private-check invitation in a group")
    invite.add_argument("--chat", type=int, required=True, help="group or channel chat id")
    invite.add_argument("--lang", help="language of the post (default: "
                                       "TRIAGEBOT_DEFAULT_LANGUAGE)")
    invite.add_argument("--pin", action="store_true", help="pin the invitation")
    invite.add_argument("--flow", help="open this flow directly (default: the /start menu "
                                       "when there are several)")
    invite.set_defaults(func=cmd_invite)

    export = sub.add_parser("export", help="anonymised outcomes as CSV for reporting")
    export.add_argument("--since", required=True, help="first day, e.g. 2026-01-01 (UTC)")
    export.add_argument("--out", help="write to this file instead of standard output")
    export.set_defaults(func=cmd_export)

    eval_ = sub.add_parser("eval", help="run clinical vignettes and print the metrics")
    eval_.add_argument("file", help="vignette YAML (format: VIGNETTES-FORMAT.md)")
    eval_.add_argument("--json", action="store_true", help="print one JSON object")
    eval_.add_argument("--flow", help=f"flow id (default {DEFAULT_FLOW})")
    eval_.add_argument("--lang", default="en",
                       help="interview language (default en); the patient types its answers "
                            "in it, or 'all' for every language of the flow")
    eval_.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.func is not cmd_init:  # (init writes the file; a broken one must not stop it)
            read_env_file()
        return args.func(args)
    except FlowError as exc:
        print(exc, file=sys.stderr)
        print("The flow has problems: fix them (run `triagebot validate`) and try again.",
              file=sys.stderr)
        return 1
    except (SettingsError, VignetteError, StoreInUse) as exc:
        print(f"triagebot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
