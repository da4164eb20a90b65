//! `fjord check-config`: the verdicts an operator gets before deploying a file.

#[test]
fn check_config_accepts_the_reference_file_and_locates_mistakes() -> anyhow::Result<()> {
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let summary = fjord_cli::check_config(Some(&reference)).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        summary.contains("ok; catalogs: iceberg (iceberg), postgresql (postgres)"),
        "{summary}"
    );
    assert!(
        summary.contains(
            "cat_interactions (cat-interactions -> iceberg.data_on_eks.cat_interactions_raw)"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("alert rules: adopter_detective (cat_interactions -> potential-adopters)"),
        "{summary}"
    );
    assert!(
        fjord_cli::check_config(None).is_ok(),
        "the embedded default is valid"
    );

    let directory = tempfile::tempdir()?;
    let cases = [
        (
            "[server]\npostgres_listen = 5433\n",
            2,
            "server.postgres_listen",
            "invalid type",
        ),
        (
            "[catalogs.crm]\ntype = \"postgres\"\nhost = \"db\"\ndatabase = \"crm\"\nuser = \"u\"\nhots = \"x\"\n",
            6,
            "catalogs.crm.hots",
            "unknown field `hots`",
        ),
        (
            "[catalogs.crm]\ntype = \"postgres\"\nhost = \"db\"\ndatabase = \"crm\"\nuser = \"u\"\npassword = \"${FJORD_CHECK_CONFIG_UNSET}\"\n",
            6,
            "catalogs.crm.password",
            "FJORD_CHECK_CONFIG_UNSET",
        ),
        (
            "[catalogs.lake]\ntype = \"iceberg\"\ncatalog = \"rest\"\nwarehouse = \"s3://b/w\"\n",
            1,
            "catalogs.lake.uri",
            "REST catalog",
        ),
        ("[server\n", 1, "", "invalid table header"),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.likes]\ntopics = [\"l\"]\ntable = \"s.likes\"\n[ingest.rules.fans]\nsql = \"SELECT visitor_id, count(*) AS n FROM likes GROUP BY visitor_id ORDER BY n\"\nkey = \"visitor_id\"\n",
            10,
            "ingest.rules.fans.sql",
            "ORDER BY has no meaning for alerts",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.likes]\ntopics = [\"l\"]\ntable = \"s.likes\"\n[ingest.rules.fans]\nsql = \"SELECT visitor_id FROM like WHERE cat_id = 'c1'\"\nkey = \"visitor_id\"\n",
            10,
            "ingest.rules.fans.sql",
            "FROM `like`: no such pipeline",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.temps]\ntopics = [\"t\"]\ntable = \"s.temps\"\n[ingest.rules.hot]\nsql = \"SELECT cat_id FROM temps WHERE c > 39\"\nkey = \"cat_id\"\nidle_timeout = \"30s\"\n",
            12,
            "ingest.rules.hot.idle_timeout",
            "only rules that GROUP BY a time window",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.temps]\ntopics = [\"t\"]\ntable = \"s.temps\"\n[ingest.rules.hot]\nsql = \"SELECT cat_id, avg(c) FROM temps GROUP BY cat_id, HOP(event_time, INTERVAL '5' MINUTE, INTERVAL '1' MINUTE)\"\nkey = \"cat_id\"\nlate_events_topic = \"late\"\n",
            10,
            "ingest.rules.hot.sql",
            "shorter than the slide",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.temps]\ntopics = [\"t\"]\ntable = \"s.temps\"\n[ingest.rules.hot]\nsql = \"SELECT cat_id, avg(c) FROM temps GROUP BY cat_id, TUMBLE(event_time, INTERVAL '1' MINUTE)\"\nkey = \"cat_id\"\n",
            9,
            "ingest.rules.hot.late_events_topic",
            "needs a topic for the records that arrive after their window closed",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.orders]\ntopics = [\"o\"]\ntable = \"s.orders\"\ncomit = {}\n",
            9,
            "ingest.pipelines.orders.comit",
            "unknown field `comit`",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.orders]\ntopics = [\"o\"]\ntable = \"orders\"\n",
            8,
            "ingest.pipelines.orders.table",
            "schema.table",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.orders]\ntopics = [\"o\"]\ntable = \"s.orders\"\n[ingest.pipelines.orders.commit]\ninterval = \"soon\"\n",
            10,
            "ingest.pipelines.orders.commit.interval",
            "not a duration",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest]\ncatalog = \"lake2\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n",
            5,
            "ingest.catalog",
            "no Iceberg catalog named `lake2`",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.cats]\ntopics = [\"pg.public.cats\"]\ntable = \"s.cats_changelog\"\nformat = \"debezium\"\n",
            8,
            "ingest.pipelines.cats.table",
            "name the current-state table",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.cats]\ntopics = [\"pg.public.cats\"]\ntable = \"s.cats\"\nformat = \"protobuf\"\n",
            9,
            "ingest.pipelines.cats.format",
            "unknown variant `protobuf`",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.maintenance]\nretain_last = 0\n",
            7,
            "ingest.maintenance.retain_last",
            "at least 1",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.maintenance]\nsmall_file_size = \"large\"\n",
            7,
            "ingest.maintenance.small_file_size",
            "not a size",
        ),
        (
            "[server.auth.users]\nalice = \"SCRAM-SHA-256$4096:YPgGz8rhfdfsHmC8bgboxA==$DmQaWx9TJ95eVcXWC2ucskPtTysN7JxYnBMCfQrlTDU=:jadGBlg2DyxtYnKsFCmDqCw1RZ/xgD4ufqyU+eFRyy4=\"\nbob = \"hunter2\"\n",
            3,
            "server.auth.users.bob",
            "never a password",
        ),
        (
            "[server.auth]\nmethod = \"password\"\n",
            2,
            "server.auth.method",
            "needs [server.tls]",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.events]\ntopics = [\"e\"]\ntable = \"s.{kind_events\"\n",
            8,
            "ingest.pipelines.events.table",
            "`{` without a closing `}`",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.events]\ntopics = [\"e\"]\ntable = \"{tenant}.events\"\n",
            8,
            "ingest.pipelines.events.table",
            "routing chooses the table, not the schema",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.cdc]\ntopics = [\"pg.public.cats\"]\ntable = \"s.{_kafka_topic}\"\nformat = \"debezium\"\n",
            8,
            "ingest.pipelines.cdc.table",
            "give each its own pipeline",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.schema_registry]\nurl = \"http://r:8081\"\n[ingest.pipelines.events]\ntopics = [\"e\"]\ntable = \"s.{kind}_events\"\nformat = \"avro\"\n",
            10,
            "ingest.pipelines.events.table",
            "routes by `{_kafka_topic}` only, not by the field `kind`",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.events]\ntopics = [\"e\"]\ntable = \"s.{kind}\"\n",
            8,
            "ingest.pipelines.events.table",
            "could name `s.dead_letters`, the dead-letter table of pipeline `events`",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.all]\ntopics = [\"a\", \"b\"]\ntable = \"s.{_kafka_topic}_raw\"\ndead_letter_table = \"dl.letters\"\n[ingest.pipelines.orders]\ntopics = [\"o\"]\ntable = \"s.orders_raw\"\ndead_letter_table = \"dl.letters\"\n",
            8,
            "ingest.pipelines.all.table",
            "could name `s.orders_raw`, the table of pipeline `orders`",
        ),
        (
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n[ingest.kafka]\nbootstrap_servers = \"k:9092\"\n[ingest.pipelines.kinds]\ntopics = [\"a\"]\ntable = \"s.{kind}_events\"\ndead_letter_table = \"dl.letters\"\n[ingest.pipelines.plays]\ntopics = [\"p\"]\ntable = \"s.play_{source}\"\ndead_letter_table = \"dl.letters\"\n",
            8,
            "ingest.pipelines.kinds.table",
            "pipeline `plays`'s `s.play_{source}` could name the same table",
        ),
        (
            "[server.auth]\nmethod = \"md5\"\n",
            2,
            "server.auth.method",
            "unknown variant `md5`",
        ),
    ];
    for (index, (text, line, key, reason)) in cases.iter().enumerate() {
        let path = directory.path().join(format!("case{index}.toml"));
        std::fs::write(&path, text)?;
        let error = fjord_cli::check_config(Some(&path)).expect_err(text);
        let printed = error.to_string();
        assert!(
            printed.starts_with(&format!("{}:{line}", path.display())),
            "{printed}"
        );
        if !key.is_empty() {
            assert_eq!(error.key.as_deref(), Some(*key), "{printed}");
        }
        assert!(printed.contains(reason), "{printed}");
    }
    Ok(())
}

/// `fjord check-config` reads the catalogs directory as `fjord serve` would, and names a
/// broken catalog file with its line.
#[test]
fn check_config_judges_the_catalogs_directory_too() -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let config = directory.path().join("config.toml");
    std::fs::write(
        &config,
        "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n",
    )?;
    let catalogs = directory.path().join("catalogs");
    std::fs::create_dir(&catalogs)?;
    std::fs::write(
        catalogs.join("crm.toml"),
        "type = \"postgres\"\nhost = \"db\"\ndatabase = \"crm\"\nuser = \"u\"\n",
    )?;
    let summary = fjord_cli::check_config(Some(&config)).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(summary.contains("crm (postgres)"), "{summary}");
    std::fs::write(
        catalogs.join("crm.toml"),
        "type = \"postgres\"\nhost = \"db\"\ndatabase = \"crm\"\nuser = \"u\"\npool_size = \"big\"\n",
    )?;
    let error = fjord_cli::check_config(Some(&config)).expect_err("a broken catalog file");
    let printed = error.to_string();
    assert!(
        printed.starts_with(&format!("{}:5", catalogs.join("crm.toml").display())),
        "{printed}"
    );
    assert!(printed.contains("pool_size"), "{printed}");
    Ok(())
}
