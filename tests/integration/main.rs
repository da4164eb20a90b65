//! fjord's integration tests: one binary (every extra test binary links DataFusion again).
//! Each test starts the real components it needs; see `fjord_tests` for the harness.
#![allow(clippy::print_stderr)] // Long tests report their progress.

mod alerts;
mod auth;
mod catalog_reload;
mod cdc;
mod config_files;
mod copy_out;
mod failures;
mod flight_sql;
mod ingest;
mod live_catalogs;
mod load;
mod node_drivers;
mod object_storage;
mod postgres_scans;
mod process;
mod protocol;
mod psql_meta;
mod pushdown;
mod python_drivers;
mod scenario;
mod slt;
mod sqlalchemy;
mod superset;
