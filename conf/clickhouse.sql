-- Table for shipper's HTTP sink with format = "clickhouse" (JSONEachRow inserts).
-- Works on ClickHouse 18.16 and later: no DateTime64 there, so the time is
-- `time` (DateTime, seconds, UTC) + `time_nanos` (UInt32) + `time_unix_ns` (UInt64).
-- Core keys and the shared field names of docs/records.md have columns; every
-- other key of a record is kept, as a JSON object, in `fields`
-- (query it with visitParamExtractString(fields, 'name') / JSONExtract* on newer servers).
-- A column is NULL when the record did not have the key.
-- The sink reads the table's columns (DESCRIBE TABLE) at start and every 5 minutes:
-- add a column named like a record key (ALTER TABLE qmail_log ADD COLUMN remote_asn
-- Nullable(String)) and it is filled from then on; drop one and its values go to
-- `fields`. Types it fills: String, (U)Int8-64, Float32/64, Array(String), DateTime,
-- also Nullable/LowCardinality; a value that does not fit its column goes to `fields`.
--
-- Rename the table as you like and give the name to the sink (`table = "db.name"`).
-- Replays after a crash send the same event_id again; to fold such duplicates at
-- merge time use ENGINE = ReplacingMergeTree ... ORDER BY (time, time_nanos, event_id)
-- instead, with `event_id String` (a sorting key cannot be Nullable: ClickHouse
-- refuses the table). Lines piped in on stdin have no event_id (stored as '');
-- journalctl -o json entries do.

CREATE TABLE IF NOT EXISTS qmail_log
(
    time          DateTime('UTC'),
    time_nanos    UInt32,
    time_unix_ns  UInt64,
    event_id      Nullable(String),
    time_source   String,
    host          Nullable(String),
    program       Nullable(String),
    pid           Nullable(UInt32),
    event         String,
    message       String,
    raw           String,
    raw_base64    Nullable(String),
    flags         Array(String),
    source        Nullable(String),
    file_id       Nullable(String),
    offset        Nullable(UInt64),
    -- shared fields (docs/records.md)
    msg           Nullable(UInt64),
    delivery      Nullable(String),
    qp            Nullable(UInt64),
    mail_from     Nullable(String),
    rcpt_to       Nullable(String),
    remote_ip     Nullable(String),
    remote_host   Nullable(String),
    remote_port   Nullable(UInt16),
    remote_info   Nullable(String),
    local_ip      Nullable(String),
    local_host    Nullable(String),
    local_port    Nullable(UInt16),
    conn_pid      Nullable(UInt32),
    relay_ip      Nullable(String),
    relay_host    Nullable(String),
    relay_port    Nullable(UInt16),
    result        Nullable(String),
    smtp_code     Nullable(UInt16),
    dsn           Nullable(String),
    text          Nullable(String),
    text_raw      Nullable(String),
    qid           Nullable(String),
    message_id    Nullable(String),
    auth_user     Nullable(String),
    proto         Nullable(String),
    helo          Nullable(String),
    tls           Nullable(String),
    queue         Nullable(String),
    size          Nullable(UInt64),
    -- what a SOC filters on most: decisions, verdicts, refusals
    action        Nullable(String),
    `check`       Nullable(String),
    condition     Nullable(String),
    reason        Nullable(String),
    level         Nullable(String),
    verdict       Nullable(String),
    virus         Nullable(String),
    score         Nullable(Float64),
    exit_code     Nullable(Int32),
    service       Nullable(String),
    rbl_list      Nullable(String),
    ingest_unix_ns Nullable(UInt64),
    -- everything else, as a JSON object ("{}" when nothing)
    fields        String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (time, time_nanos);
