"""Schema migrations by number, each applied once in its own transaction."""

from __future__ import annotations

# Every table with rows about a person (by user_id): what /forget erases
PERSONAL_TABLES = ("conversations", "answer_log", "outbox", "alerts", "schedule")

MIGRATIONS: list[str] = [
    # 1: conversations, the append-only answer log, processed updates, the outbox
    """
    CREATE TABLE conversations (
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        session TEXT,
        interview INTEGER NOT NULL DEFAULT 0,
        question_message INTEGER,
        draft TEXT NOT NULL DEFAULT '[]',
        extra TEXT NOT NULL DEFAULT '{}',
        blocked INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (chat_id, user_id)
    );
    CREATE TABLE answer_log (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        interview INTEGER NOT NULL,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        node TEXT NOT NULL,
        finding TEXT NOT NULL,
        value TEXT
    );
    CREATE INDEX answer_log_user ON answer_log (user_id);
    CREATE TABLE processed_updates (
        update_id INTEGER PRIMARY KEY,
        at REAL NOT NULL
    );
    CREATE INDEX processed_updates_at ON processed_updates (at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        method TEXT NOT NULL,
        params TEXT NOT NULL
    );
    CREATE INDEX conversations_updated ON conversations (updated_at);
    """,
    # 2: groups the bot is in, anonymous interview events for statistics, clinician alerts
    """
    CREATE TABLE groups (
        chat_id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        source INTEGER,
        level TEXT,
        rules TEXT NOT NULL DEFAULT '',
        questions INTEGER
    );
    CREATE INDEX events_at ON events (at);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL,
        staff_chat INTEGER NOT NULL,
        level TEXT NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL,
        message_id INTEGER,
        taken_by TEXT,
        taken_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX alerts_user ON alerts (user_id);
    """,
    # 3: check-ins (and reminders) scheduled for a person, in UTC
    """
    CREATE TABLE schedule (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        due_at REAL NOT NULL,
        interview INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        created_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX schedule_due ON schedule (status, due_at);
    CREATE INDEX schedule_user ON schedule (user_id);
    """,
    # 4: updates that kept failing because of what they held, set aside (id and kind only)
    """
    CREATE TABLE quarantined_updates (
        update_id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        error TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at REAL NOT NULL
    );
    """,
    # 5: which flow an interview event belongs to (several flows in one bot); NULL before
    """
    ALTER TABLE events ADD COLUMN flow TEXT;
    """,
]
