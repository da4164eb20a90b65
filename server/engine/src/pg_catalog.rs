//! `pg_catalog` for clients that browse fjord as if it were PostgreSQL (psql's `\d` family,
//! drivers' metadata queries), and the session functions they call (`version()`,
//! `current_database()`, `current_schema()`, `current_user`, `pg_backend_pid()`).
//!
//! Each catalog gets its own `pg_catalog` schema, built by datafusion-pg-catalog over that one
//! catalog: `\dt` in a session lists the tables of the session's current catalog (the
//! connection's database), in every schema. The schema is resolvable but not listed, so
//! `SHOW SCHEMAS` and `information_schema` stay about the user's data. One provider per catalog
//! is shared by every session, so OIDs agree between connections.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables, create_current_schemas_udf,
    create_pg_encoding_to_char_udf, create_pg_get_constraintdef,
    create_pg_get_partition_ancestors_udf, create_pg_get_partkeydef_udf,
    create_pg_get_statisticsobjdef_columns_udf, create_pg_get_userbyid_udf,
    create_pg_relation_is_publishable_udf, create_pg_relation_size_udf,
    create_pg_stat_get_numscans, create_pg_table_is_visible, create_pg_total_relation_size_udf,
    format_type, has_privilege_udf, pg_get_expr_udf, quote_ident_udf,
};
use fjord_catalog::CatalogRegistry;
use parking_lot::{Mutex, RwLock};

/// What `version()` says: PostgreSQL's form, which drivers parse, then fjord's own version.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 16.6 (fjord {}) on {}-pc-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// The catalog list every session sees: the registry's catalogs, each able to resolve a
/// `pg_catalog` schema.
#[derive(Debug)]
pub(crate) struct SessionCatalogList {
    registry: Arc<CatalogRegistry>,
    /// `system`: resolved by name, not listed with the configured catalogs.
    system: Arc<dyn CatalogProvider>,
    statics: Option<Arc<PgCatalogStaticTables>>,
    pg_catalogs: Mutex<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl SessionCatalogList {
    pub(crate) fn new(registry: Arc<CatalogRegistry>, system: Arc<dyn CatalogProvider>) -> Self {
        let statics = match PgCatalogStaticTables::try_new() {
            Ok(statics) => Some(Arc::new(statics)),
            Err(error) => {
                tracing::warn!(%error, "pg_catalog emulation is unavailable");
                None
            }
        };
        SessionCatalogList {
            registry,
            system,
            statics,
            pg_catalogs: Mutex::new(HashMap::new()),
        }
    }

    fn pg_catalog(&self, catalog: &str) -> Option<Arc<dyn SchemaProvider>> {
        let statics = self.statics.clone()?;
        let mut cache = self.pg_catalogs.lock();
        if let Some(provider) = cache.get(catalog) {
            return Some(provider.clone());
        }
        let view = OneCatalog {
            registry: self.registry.clone(),
            name: catalog.to_string(),
        };
        let provider =
            PgCatalogSchemaProvider::try_new(view, statics, EmptyContextProvider).ok()?;
        let provider: Arc<dyn SchemaProvider> = Arc::new(WithArrayColumns {
            inner: Arc::new(provider),
            registry: self.registry.clone(),
            catalog: catalog.to_string(),
        });
        cache.insert(catalog.to_string(), provider.clone());
        Some(provider)
    }
}

impl CatalogProviderList for SessionCatalogList {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.registry.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.registry.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name == crate::system::SYSTEM_CATALOG {
            return Some(self.system.clone());
        }
        let inner = self.registry.catalog(name)?;
        match self.pg_catalog(name) {
            Some(pg_catalog) => Some(Arc::new(WithPgCatalog { inner, pg_catalog })),
            None => Some(inner),
        }
    }
}

/// A catalog that also resolves (without listing) its `pg_catalog` schema.
#[derive(Debug)]
struct WithPgCatalog {
    inner: Arc<dyn CatalogProvider>,
    pg_catalog: Arc<dyn SchemaProvider>,
}

impl CatalogProvider for WithPgCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == "pg_catalog" {
            return Some(self.pg_catalog.clone());
        }
        self.inner.schema(name)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }
}

/// One catalog of the registry, as datafusion-pg-catalog enumerates it.
#[derive(Debug, Clone)]
struct OneCatalog {
    registry: Arc<CatalogRegistry>,
    name: String,
}

impl OneCatalog {
    fn schema(&self, catalog: &str, schema: &str) -> Option<Arc<dyn SchemaProvider>> {
        if catalog != self.name {
            return None;
        }
        self.registry.catalog(catalog)?.schema(schema)
    }
}

#[async_trait]
impl CatalogInfo for OneCatalog {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        Ok(vec![self.name.clone()])
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        if catalog != self.name {
            return Ok(None);
        }
        Ok(self
            .registry
            .catalog(catalog)
            .map(|provider| provider.schema_names()))
    }

    async fn table_names(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Result<Option<Vec<String>>, DataFusionError> {
        Ok(self
            .schema(catalog, schema)
            .map(|provider| provider.table_names()))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        let Some(provider) = self.schema(catalog, schema) else {
            return Ok(None);
        };
        // A table that cannot be loaded right now (its source is down) is left out of the
        // listing rather than failing the whole metadata query.
        match provider.table(table).await {
            Ok(table) => Ok(table.map(|table| table.schema())),
            Err(error) => {
                tracing::debug!(catalog, schema, table, %error, "table left out of pg_catalog");
                Ok(None)
            }
        }
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>, DataFusionError> {
        let Some(provider) = self.schema(catalog, schema) else {
            return Ok(None);
        };
        Ok(provider.table_type(table).await.unwrap_or(None))
    }
}

/// What the session functions report; updated by the session as it changes.
#[derive(Debug)]
pub(crate) struct SessionFacts {
    pub(crate) user: String,
    pub(crate) backend_pid: i32,
}

/// Registers the functions clients call to learn about the server and their session.
pub(crate) fn register_session_functions(
    context: &SessionContext,
    facts: Arc<RwLock<SessionFacts>>,
) {
    for udf in [
        create_current_schemas_udf(),
        create_pg_get_userbyid_udf(),
        has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        create_pg_table_is_visible(),
        ScalarUDF::new_from_impl(OidsAsText::new(format_type::create_format_type_udf())),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        create_pg_get_partkeydef_udf(),
        create_pg_relation_is_publishable_udf(),
        create_pg_get_statisticsobjdef_columns_udf(),
        create_pg_encoding_to_char_udf(),
        create_pg_relation_size_udf(),
        create_pg_total_relation_size_udf(),
        create_pg_stat_get_numscans(),
        create_pg_get_constraintdef(),
        create_pg_get_partition_ancestors_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
    ] {
        context.register_udf(udf);
    }
    // psql's \df asks about functions; fjord exposes none of its own in pg_proc.
    context.register_udf(oid_function(
        "pg_function_is_visible",
        DataType::Boolean,
        ScalarValue::Boolean(Some(true)),
    ));
    context.register_udf(oid_function(
        "pg_get_function_result",
        DataType::Utf8,
        ScalarValue::Utf8(Some(String::new())),
    ));
    context.register_udf(oid_function(
        "pg_get_function_arguments",
        DataType::Utf8,
        ScalarValue::Utf8(Some(String::new())),
    ));
    // Functions drivers' catalog queries name in branches that never apply to fjord's tables
    // (no sequences, collations, comments or indexes): they must exist to plan, and answer as
    // PostgreSQL does for objects without those things.
    for (name, arguments, returns, value) in [
        (
            "pg_get_serial_sequence",
            Some(2),
            DataType::Utf8,
            ScalarValue::Utf8(None),
        ),
        (
            "json_build_object",
            None,
            DataType::Utf8,
            ScalarValue::Utf8(None),
        ),
        (
            "pg_collation_is_visible",
            Some(1),
            DataType::Boolean,
            ScalarValue::Boolean(Some(true)),
        ),
        (
            "pg_type_is_visible",
            Some(1),
            DataType::Boolean,
            ScalarValue::Boolean(Some(true)),
        ),
        (
            "obj_description",
            None,
            DataType::Utf8,
            ScalarValue::Utf8(None),
        ),
        (
            "col_description",
            Some(2),
            DataType::Utf8,
            ScalarValue::Utf8(None),
        ),
        (
            "shobj_description",
            Some(2),
            DataType::Utf8,
            ScalarValue::Utf8(None),
        ),
        (
            "pg_get_indexdef",
            None,
            DataType::Utf8,
            ScalarValue::Utf8(Some(String::new())),
        ),
        (
            "pg_get_viewdef",
            None,
            DataType::Utf8,
            ScalarValue::Utf8(Some(String::new())),
        ),
        // A set-returning function in PostgreSQL; only ever applied to the (empty) index and
        // constraint tables here.
        (
            "generate_subscripts",
            Some(2),
            DataType::Int32,
            ScalarValue::Int32(None),
        ),
    ] {
        context.register_udf(ScalarUDF::new_from_impl(FixedAnswer::new(
            name, arguments, returns, value,
        )));
    }
    // information_schema._pg_expandarray: set-returning in PostgreSQL, a record of element `x`
    // and position `n`. pgJDBC's getPrimaryKeys applies it to pg_index.indkey only.
    let expanded = DataType::Struct(
        vec![
            Field::new("x", DataType::Int32, true),
            Field::new("n", DataType::Int32, true),
        ]
        .into(),
    );
    if let Ok(null) = ScalarValue::try_from(&expanded) {
        context.register_udf(ScalarUDF::new_from_impl(FixedAnswer::new(
            "_pg_expandarray",
            Some(1),
            expanded,
            null,
        )));
    }
    let version = version_string();
    context.register_udf(constant_text("version", move || version.clone()));
    // The state owns these functions: hold it weakly, or no session would ever be freed.
    let state = Arc::downgrade(&context.state_ref());
    let catalog_state = state.clone();
    context.register_udf(constant_text("current_database", move || {
        catalog_state
            .upgrade()
            .map(|state| {
                state
                    .read()
                    .config()
                    .options()
                    .catalog
                    .default_catalog
                    .clone()
            })
            .unwrap_or_default()
    }));
    let schema_state = state;
    context.register_udf(constant_text("current_schema", move || {
        schema_state
            .upgrade()
            .map(|state| {
                state
                    .read()
                    .config()
                    .options()
                    .catalog
                    .default_schema
                    .clone()
            })
            .unwrap_or_default()
    }));
    let user_facts = facts.clone();
    context.register_udf(constant_text("session_user", move || {
        user_facts.read().user.clone()
    }));
    let user_facts = facts.clone();
    context.register_udf(constant_text("current_user", move || {
        user_facts.read().user.clone()
    }));
    let pid_facts = facts;
    context.register_udf(create_udf(
        "pg_backend_pid",
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(
                pid_facts.read().backend_pid,
            ))))
        }),
    ));
}

/// A function of one OID argument with a fixed answer.
fn oid_function(name: &str, returns: DataType, value: ScalarValue) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        returns,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
    )
}

/// A zero-argument function whose value is read when the statement is planned.
fn constant_text(name: &str, value: impl Fn() -> String + Send + Sync + 'static) -> ScalarUDF {
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(value()))))
        }),
    )
}

/// Whether a statement looks like a client's catalog query, which is rewritten by
/// datafusion-pg-catalog's Postgres compatibility parser (`::regclass`, `OPERATOR(...)`,
/// `current_user`, `ANY(array)`...) before planning. Other statements are planned as written:
/// those rewrites are not meant for user queries.
pub(crate) fn needs_compatibility_rewrite(sql: &str) -> bool {
    let lowered = sql.to_ascii_lowercase();
    [
        "pg_catalog",
        "pg_class",
        "pg_namespace",
        "pg_attribute",
        "pg_type",
        "pg_database",
        "regclass",
        "operator(",
        "current_user",
        "pg_get_",
        "pg_settings",
    ]
    .iter()
    .any(|marker| lowered.contains(marker))
}

/// `regclass`, `regtype`, ... and `oid`: integers in fjord's pg_catalog.
fn is_oid_alias(data_type: &datafusion::sql::sqlparser::ast::DataType) -> bool {
    use datafusion::sql::sqlparser::ast::DataType as SqlType;
    match data_type {
        SqlType::Regclass => true,
        SqlType::Custom(name, _) => {
            let name = name.to_string().to_ascii_lowercase();
            let name = name.trim_start_matches("pg_catalog.");
            name.starts_with("reg") || name == "oid"
        }
        _ => false,
    }
}

/// Rewrites that datafusion-pg-catalog's parser leaves to us, for drivers' catalog queries:
/// `LIKE ... ESCAPE '/'` (DataFusion only knows the backslash) and casts to the OID alias types
/// (`CAST(x AS REGCLASS)`, `CAST(x AS OID)`), which are integers here.
pub(crate) fn rewrite_catalog_statement(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
) {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    let _ = visit_expressions_mut(statement, |expression| {
        match expression {
            Expr::Like {
                pattern,
                escape_char,
                ..
            }
            | Expr::ILike {
                pattern,
                escape_char,
                ..
            } => {
                if let Some(value) = escape_char.clone()
                    && let Value::SingleQuotedString(escape) = value
                    && escape != "\\"
                    && escape.chars().count() == 1
                {
                    // `c` followed by x means a literal x: the same as `\x`.
                    let text = format!(
                        "replace(replace({pattern}, '\\', '\\\\'), '{}', '\\')",
                        escape.replace('\'', "''")
                    );
                    if let Ok(rewritten) = Parser::new(&PostgreSqlDialect {})
                        .try_with_sql(&text)
                        .and_then(|mut p| p.parse_expr())
                    {
                        **pattern = rewritten;
                        *escape_char = None;
                    }
                }
            }
            Expr::Subquery(query) => aggregate_scalar_subquery(query),
            // `(record).field` (pgJDBC reads `(_pg_expandarray(indkey)).n`): DataFusion takes a
            // field by a quoted name only. (`t.column[1]` is a compound access too, on a
            // name rather than a parenthesized value, and stays as it is.)
            Expr::CompoundFieldAccess { root, access_chain }
                if matches!(**root, Expr::Nested(_)) =>
            {
                for access in access_chain.iter_mut() {
                    if let datafusion::sql::sqlparser::ast::AccessExpr::Dot(Expr::Identifier(
                        field,
                    )) = access
                    {
                        let name = field.value.clone();
                        *access = datafusion::sql::sqlparser::ast::AccessExpr::Dot(Expr::value(
                            Value::SingleQuotedString(name),
                        ));
                    }
                }
            }
            // `ARRAY(SELECT ...)` (psql's \d+ lists TOAST options with it): fjord's tables have
            // no storage options, so the array would be empty; NULL reads the same there.
            Expr::Function(function)
                if function.name.to_string().eq_ignore_ascii_case("array")
                    && matches!(
                        function.args,
                        datafusion::sql::sqlparser::ast::FunctionArguments::Subquery(_)
                    ) =>
            {
                *expression = Expr::value(Value::Null);
            }
            // Drivers read optional details (defaults, identity sequences, collations) through
            // correlated subqueries guarded by CASE. fjord's tables have none of them, so the
            // subqueries could only answer NULL, and DataFusion cannot plan them there.
            Expr::Case {
                conditions,
                else_result,
                ..
            } => {
                let mut parts: Vec<&mut Expr> = Vec::new();
                for when in conditions.iter_mut() {
                    parts.push(&mut when.condition);
                    parts.push(&mut when.result);
                }
                if let Some(else_result) = else_result {
                    parts.push(else_result.as_mut());
                }
                for part in parts {
                    let _ = visit_expressions_mut(part, |inner| {
                        if matches!(inner, Expr::Subquery(_)) {
                            *inner = Expr::value(Value::Null);
                        }
                        ControlFlow::<()>::Continue(())
                    });
                }
            }
            Expr::Cast {
                expr, data_type, ..
            } if is_oid_alias(data_type) => {
                let inner = std::mem::replace(expr.as_mut(), Expr::value(Value::Null));
                *expression = inner;
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// A catalog function whose arguments are OIDs and type modifiers, taking them as text too.
/// The compatibility parser drops casts to `oid`, so `'1700'::pg_catalog.oid` (psql's `\gdesc`
/// sends it to `format_type`) arrives as the text `'1700'`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct OidsAsText {
    inner: ScalarUDF,
    signature: datafusion::logical_expr::Signature,
}

impl OidsAsText {
    fn new(inner: ScalarUDF) -> Self {
        let signature = datafusion::logical_expr::Signature::variadic_any(Volatility::Stable);
        OidsAsText { inner, signature }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for OidsAsText {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        self.inner
            .return_type(&vec![DataType::Int64; arguments.len()])
    }

    fn invoke_with_args(
        &self,
        mut arguments: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<ColumnarValue> {
        for argument in &mut arguments.args {
            *argument = argument.cast_to(&DataType::Int64, None)?;
        }
        arguments.arg_fields = arguments
            .arg_fields
            .iter()
            .map(|field| Arc::new(field.as_ref().clone().with_data_type(DataType::Int64)))
            .collect();
        self.inner.invoke_with_args(arguments)
    }
}

/// A function that answers the same value whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FixedAnswer {
    name: String,
    signature: datafusion::logical_expr::Signature,
    returns: DataType,
    value: ScalarValue,
}

impl FixedAnswer {
    fn new(name: &str, arguments: Option<usize>, returns: DataType, value: ScalarValue) -> Self {
        use datafusion::logical_expr::Signature;
        let signature = match arguments {
            Some(count) => Signature::any(count, Volatility::Immutable),
            None => Signature::variadic_any(Volatility::Immutable),
        };
        FixedAnswer {
            name: name.to_string(),
            signature,
            returns,
            value,
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for FixedAnswer {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(
        &self,
        _arguments: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// Columns that PostgreSQL types as arrays (`int2vector`, `oidvector`, `int2[]`, `oid[]`) and
/// datafusion-pg-catalog stores as text: drivers `unnest` them.
const ARRAY_COLUMNS: &[(&str, &[&str])] = &[
    (
        "pg_index",
        &["indkey", "indcollation", "indclass", "indoption"],
    ),
    (
        "pg_constraint",
        &[
            "conkey",
            "confkey",
            "conpfeqop",
            "conppeqop",
            "conffeqop",
            "conexclop",
            "confdelsetcols",
        ],
    ),
];

/// fjord's pg_catalog: datafusion-pg-catalog's, except that the index and constraint tables
/// (always empty for fjord's tables, which have neither) have their array columns typed as
/// arrays, so that drivers' queries over them plan.
#[derive(Debug)]
struct WithArrayColumns {
    inner: Arc<dyn SchemaProvider>,
    registry: Arc<CatalogRegistry>,
    catalog: String,
}

#[async_trait]
impl SchemaProvider for WithArrayColumns {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(
        &self,
        name: &str,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        // The tables that describe the user's objects are fjord's own, with stable OIDs.
        if matches!(name, "pg_namespace" | "pg_class" | "pg_attribute") {
            let Some(catalog) = self.registry.catalog(&self.catalog) else {
                return Ok(None);
            };
            let key = fjord_catalog::fjord_postgres_type_key();
            return Ok(Some(match name {
                "pg_namespace" => {
                    crate::pg_catalog_tables::pg_namespace(&self.catalog, catalog.as_ref())?
                }
                "pg_class" => {
                    let relations = crate::pg_catalog_tables::relations(catalog.as_ref()).await;
                    crate::pg_catalog_tables::pg_class(&self.catalog, &relations)?
                }
                _ => {
                    let relations = crate::pg_catalog_tables::relations(catalog.as_ref()).await;
                    crate::pg_catalog_tables::pg_attribute(&self.catalog, &relations, key)?
                }
            }));
        }
        let table = self.inner.table(name).await?;
        if name == "pg_settings" {
            let Some(table) = table else { return Ok(None) };
            return Ok(Some(crate::pg_catalog_tables::pg_settings(
                &table.schema(),
            )?));
        }
        if name == "pg_database" {
            // Every catalog is a database to clients (`\l`, database pickers).
            let Some(table) = table else { return Ok(None) };
            return Ok(Some(crate::pg_catalog_tables::pg_database(
                &table.schema(),
                &self.registry.names(),
            )?));
        }
        let Some((_, columns)) = ARRAY_COLUMNS
            .iter()
            .find(|(table_name, _)| *table_name == name)
        else {
            return Ok(table);
        };
        let Some(table) = table else { return Ok(None) };
        use datafusion::arrow::datatypes::{Field, Schema};
        let fields: Vec<Field> = table
            .schema()
            .fields()
            .iter()
            .map(|field| {
                if columns.contains(&field.name().as_str()) {
                    Field::new(
                        field.name(),
                        DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                        true,
                    )
                } else {
                    field.as_ref().clone()
                }
            })
            .collect();
        let empty =
            datafusion::datasource::MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
        Ok(Some(Arc::new(empty)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// Wraps a correlated scalar subquery's single output in `max(...)`: DataFusion requires such
/// subqueries to be aggregated, and PostgreSQL requires them to return at most one row, so the
/// answer is the same.
fn aggregate_scalar_subquery(query: &mut datafusion::sql::sqlparser::ast::Query) {
    use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, SelectItem, SetExpr};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if select.projection.len() != 1
        || !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
    {
        return;
    }
    let expr = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => expr,
        _ => return,
    };
    if let Expr::Function(function) = expr {
        let name = function.name.to_string().to_ascii_lowercase();
        if [
            "count",
            "min",
            "max",
            "sum",
            "avg",
            "array_agg",
            "bool_and",
            "bool_or",
            "string_agg",
            "json_agg",
        ]
        .iter()
        .any(|aggregate| name.ends_with(aggregate))
        {
            return;
        }
    }
    let text = format!("max({expr})");
    if let Ok(wrapped) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut parser| parser.parse_expr())
    {
        *expr = wrapped;
    }
}
