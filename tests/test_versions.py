"""A redeploy with a changed flow while people are mid-interview: they finish on the
version they began (kept in flows/versions/), or carry on when the new version declares
it continues theirs; never an answer read as a different question's."""

from __future__ import annotations

import shutil

import pytest

from bot.conversation import Conversations, Event
from bot.engine import Engine
from bot.loader import load_archive, load_flow, version_problems
from bot.store import Conversation, Key
from bot.telegram import render

from .conftest import BUNDLED, FLOWS
from .test_cli import triagebot
from .test_telegram import Harness, Person

LANGS = ("es", "ru", "ar")
KEY = Key(901, 901)


def deploy(folder, version: int, edit=lambda text: text, keep: tuple[int, ...] = ()):
    """Write the bundled flow as `version` (edited) into `folder`, keeping the listed
    earlier versions (the bundled flow as it is) in folder/versions/."""
    folder.mkdir(exist_ok=True)
    text = BUNDLED.read_text(encoding="utf-8").replace("version: 1\n", f"version: {version}\n")
    (folder / BUNDLED.name).write_text(edit(text), encoding="utf-8")
    for lang in LANGS:
        shutil.copy(FLOWS / f"back_pain_fever.{lang}.yaml", folder)
    for old in keep:
        versions = folder / "versions"
        versions.mkdir(exist_ok=True)
        old_text = BUNDLED.read_text(encoding="utf-8").replace("version: 1\n",
                                                               f"version: {old}\n")
        (versions / f"back_pain_fever.v{old}.yaml").write_text(old_text, encoding="utf-8")
        for lang in LANGS:
            shutil.copy(FLOWS / f"back_pain_fever.{lang}.yaml",
                        versions / f"back_pain_fever.v{old}.{lang}.yaml")
    return folder / BUNDLED.name


def renamed_severity(text: str) -> str:
    """Version 2: the pain question loses 'moderate' (a new meaning), under a new id."""
    text = text.replace("    next: severity\n", "    next: severity2\n")
    text = text.replace("  severity:\n    type: choice", "  severity2:\n    type: choice")
    return text.replace('      - {id: moderate, label: {en: "Moderate: hard to concentrate or '
                        'sleep, but I can get up, wash and dress"}}\n', "")


def es_renamed(folder) -> None:
    for lang in LANGS:
        path = folder / f"back_pain_fever.{lang}.yaml"
        text = path.read_text(encoding="utf-8").replace("  severity:\n", "  severity2:\n")
        lines = text.splitlines(keepends=True)
        path.write_text("".join(ln for ln in lines if not ln.startswith("      moderate:")),
                        encoding="utf-8")


def event(kind: str, **kw) -> Event:
    return Event(kind, **kw)


def walk_to_severity(conversations: Conversations) -> Conversation:
    conv = Conversation(KEY, extra={"consent": "none", "lang": "en"})
    conv = conversations.decide(conv, event("command", command="start")).conversation
    for text in ("45", "male", "lower", "none", "39", "none"):
        conv = conversations.decide(conv, event("text", text=text)).conversation
    assert conv.session.node == "severity"
    return conv


def test_an_interview_begun_on_version_1_finishes_on_it(tmp_path):
    v1 = Conversations(Engine(load_flow(BUNDLED)))
    conv = walk_to_severity(v1)
    path = deploy(tmp_path / "v2", 2, renamed_severity, keep=(1,))
    es_renamed(tmp_path / "v2")
    archive, problems = load_archive(path.parent)
    assert problems == [] and (("back_pain_fever", 1) in archive)
    v2 = Conversations(Engine(load_flow(path)),
                       archive={k: Engine(f) for k, f in archive.items()})
    decision = v2.decide(conv, event("text", text="moderate"))  # a v1 answer, read by v1
    session = decision.conversation.session
    assert session.flow_version == 1 and session.node == "duration"
    assert ("severity", "pain_severity", "moderate") in {(a.node, a.finding, a.value)
                                                          for a in session.answers}
    for text in ("2 days", "none", "none", "none"):
        decision = v2.decide(decision.conversation, event("text", text=text))
    assert decision.conversation.session.status == "done"
    fresh = v2.decide(decision.conversation, event("command", command="restart"))
    assert fresh.conversation.session.flow_version == 2, "a new interview is on version 2"


def test_without_the_old_version_the_interview_starts_again_safely(tmp_path):
    v1 = Conversations(Engine(load_flow(BUNDLED)))
    conv = walk_to_severity(v1)
    path = deploy(tmp_path / "v2", 2, renamed_severity)
    es_renamed(tmp_path / "v2")
    v2 = Conversations(Engine(load_flow(path)))
    decision = v2.decide(conv, event("text", text="moderate"))
    session = decision.conversation.session
    assert session.flow_version == 2 and session.node == "age", "started again, not guessed"
    assert not any(a.finding == "pain_severity" for a in session.answers)
    assert "Starting again" in str(decision.calls)


def test_a_version_that_continues_the_old_one_carries_on(tmp_path):
    v1 = Conversations(Engine(load_flow(BUNDLED)))
    conv = walk_to_severity(v1)
    reworded = lambda t: t.replace("version: 2\n", "version: 2\ncontinues: [1]\n").replace(  # noqa: E731
        "How bad is the back pain?", "How severe is the back pain?")
    path = deploy(tmp_path / "v2", 2, reworded, keep=(1,))
    archive, _ = load_archive(path.parent)
    assert version_problems(load_flow(path), archive) == []
    v2 = Conversations(Engine(load_flow(path)))
    session = v2.decide(conv, event("text", text="moderate")).conversation.session
    assert session.flow_version == 2 and session.node == "duration"


def test_validate_refuses_a_changed_question_under_the_same_id(tmp_path):
    changed = lambda t: t.replace('      - {id: moderate, label: {en: "Moderate: hard to concentrate or sleep, but I can get up, wash and dress"}}\n', "")  # noqa: E501, E731
    path = deploy(tmp_path / "v2", 2, changed, keep=(1,))
    for lang in LANGS:  # (the translations lose it too)
        f = path.parent / f"back_pain_fever.{lang}.yaml"
        f.write_text("".join(ln for ln in f.read_text(encoding="utf-8").splitlines(True)
                             if not ln.startswith("      moderate:")), encoding="utf-8")
    result = triagebot("validate", str(path.parent))
    assert result.returncode == 1
    assert "nodes.severity: question 'severity' means something else than in version 1" \
        in result.stdout and "new id" in result.stdout
    renamed = deploy(tmp_path / "v3", 2, renamed_severity, keep=(1,))
    es_renamed(renamed.parent)
    assert triagebot("validate", str(renamed.parent)).returncode == 0


def test_continuing_needs_the_old_version_kept(tmp_path):
    path = deploy(tmp_path / "v2", 2, lambda t: t.replace("version: 2\n",
                                                          "version: 2\ncontinues: [1]\n"))
    result = triagebot("validate", str(path.parent))
    assert result.returncode == 1 and "version 1 is not kept" in result.stdout


@pytest.mark.parametrize("kept", [True, False])
async def test_a_redeploy_mid_interview_on_telegram(fake, tmp_path, kept):
    """The bot restarts on version 2 while a person waits at a question of version 1;
    their next button press is answered by the version they began on, or they are told
    the check starts again: never an answer filed under another question."""
    db = tmp_path / "bot.sqlite3"
    async with Harness(fake, load_flow(BUNDLED), db, "polling"):
        p = Person(fake, 902)
        await p.start()
        for text in ("45", "male", "lower", "none", "39", "none"):
            await p.say(text)
        assert "How bad is the back pain?" in p.last()
    path = deploy(tmp_path / "v2", 2, renamed_severity, keep=(1,) if kept else ())
    es_renamed(path.parent)
    archive, _ = load_archive(path.parent)
    h = Harness(fake, load_flow(path), db, "polling")
    h.bot.conversations.archive = {k: Engine(f) for k, f in archive.items()}
    async with h:
        q = p.question()
        data = next(d for t, d in q.buttons() if t.startswith("Moderate"))
        assert render.decode(data).node == "severity"
        before = p.seen()
        fake.press(902, q.message_id, data)
        await fake.wait(lambda: p.settled(before))
        if kept:
            assert "How long ago did" in p.last()
        else:
            assert any("Starting again" in m.text for m in fake.bot_messages(902)[before:])
            assert "How old is" in p.last()
        assert fake.errors == []
