from jobwarden.db.sqlsplit import split_statements


def test_splits_on_semicolons_outside_quotes_comments_and_dollar_quotes() -> None:
    sql = """
    -- a comment; not a split
    CREATE TABLE t (note text DEFAULT 'a;b', "odd;name" int);
    /* block; /* nested; */ comment */
    CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
    SELECT 'it''s; fine';
    CREATE INDEX CONCURRENTLY i ON t (note)
    """
    assert split_statements(sql) == [
        "-- a comment; not a split\n    CREATE TABLE t (note text DEFAULT 'a;b', \"odd;name\" int)",
        "/* block; /* nested; */ comment */\n    CREATE FUNCTION f() RETURNS int AS "
        "$body$ SELECT 1; $body$ LANGUAGE sql",
        "SELECT 'it''s; fine'",
        "CREATE INDEX CONCURRENTLY i ON t (note)",
    ]


def test_comment_only_fragments_are_dropped() -> None:
    assert split_statements("-- jobwarden:no-transaction\n;\n-- end\n") == []
