//! An Iceberg warehouse on S3-compatible storage: one `[catalogs.<name>.s3]` configuration feeds
//! every read and write, with the secret given as an `${ENV}` reference (HOME, which every
//! test environment has; the test store does not check signatures).

use fjord_tests::{Fjord, ObjectStore, query_text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_warehouse_is_written_and_read_through_fjord() -> anyhow::Result<()> {
    let store = ObjectStore::start("lake").await?;
    let catalogs = format!(
        "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"s3://lake/warehouse\"\n\n\
         [catalogs.iceberg.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\n\
         secret_access_key = \"${{HOME}}\"\npath_style = true\n\n\
         [demo]\nbuild_on_start = true\ninteractions = 5000\ncats = 50\nvisitors = 10\n",
        store.endpoint
    );
    let fjord = Fjord::start_with_catalogs(&catalogs).await?;
    let client = fjord.connect().await?;
    let rows = query_text(
        &client,
        "SELECT count(*), count(DISTINCT cat_id) FROM iceberg.data_on_eks.cat_interactions_raw",
    )
    .await?;
    assert_eq!(rows, vec![vec!["5000".to_string(), "50".to_string()]]);
    client
        .batch_execute("CREATE TABLE iceberg.data_on_eks.likes AS SELECT cat_id, count(*) AS n FROM cat_interactions_raw WHERE interaction_type = 'like' GROUP BY 1")
        .await?;
    let likes = query_text(&client, "SELECT sum(n) FROM iceberg.data_on_eks.likes").await?;
    let direct = query_text(
        &client,
        "SELECT count(*) FROM cat_interactions_raw WHERE interaction_type = 'like'",
    )
    .await?;
    assert_eq!(likes, direct);
    // The files are in the bucket, not on the local disk.
    let listed = store.python(
        "print(sum(1 for page in s3.get_paginator('list_objects_v2').paginate(Bucket='lake', Prefix='warehouse/data_on_eks/likes/') for _ in page.get('Contents', [])))",
    )?;
    assert!(
        listed.trim().parse::<usize>()? >= 2,
        "metadata and data files of the CTAS: {listed}"
    );
    assert!(!fjord.directory.path().join("warehouse").exists());
    fjord.stop().await
}
