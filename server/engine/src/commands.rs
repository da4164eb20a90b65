//! Statements fjord answers itself rather than through DataFusion's planner: Trino's catalog
//! browsing (`SHOW CATALOGS`, `SHOW SCHEMAS FROM c`, `SHOW TABLES FROM c.s`, `SHOW COLUMNS`,
//! `DESCRIBE`, `USE`), session variables and transactions as Postgres clients send them, and DDL
//! that must reach an Iceberg catalog asynchronously (`CREATE SCHEMA`, `CREATE TABLE [AS]`,
//! `DROP TABLE`).
//!
//! Recognition works on tokens, so quoting, case and comments behave as in any SQL statement.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

use crate::error::{EngineError, sqlstate};

/// A statement handled by fjord itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowCatalogs {
        like: Option<String>,
    },
    ShowSchemas {
        catalog: Option<String>,
        like: Option<String>,
    },
    ShowTables {
        catalog: Option<String>,
        schema: Option<String>,
        like: Option<String>,
    },
    /// `SHOW COLUMNS FROM t` and `DESCRIBE t`: the name as written, one to three parts.
    ShowColumns {
        name: Vec<String>,
    },
    Use {
        catalog: Option<String>,
        schema: String,
    },
    Begin,
    Commit,
    Rollback,
    /// `SET name = value` for a session variable; `None` resets it to its default.
    SetVariable {
        name: String,
        value: Option<String>,
    },
    ResetAll,
    ShowVariable {
        name: String,
    },
    DiscardAll,
    CreateSchema {
        name: Vec<String>,
        if_not_exists: bool,
    },
    DropTable {
        name: Vec<String>,
        if_exists: bool,
    },
    /// `FETCH` (rows) or `MOVE` (skip, `fetch: false`) on a cursor that `DECLARE` opened.
    Fetch {
        cursor: String,
        movement: Movement,
        fetch: bool,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    CloseCursor {
        name: Option<String>,
    },
    /// `CREATE CATALOG [IF NOT EXISTS] name USING type WITH (key = value, ...)` (Trino's).
    CreateCatalog {
        name: String,
        type_name: String,
        properties: CatalogProperties,
        if_not_exists: bool,
    },
    /// `DROP CATALOG [IF EXISTS] name`.
    DropCatalog {
        name: String,
        if_exists: bool,
    },
    /// `CALL system.runtime.kill_query(query_id => '...' [, message => '...'])` (Trino's).
    KillQuery {
        query_id: String,
        message: Option<String>,
    },
}

/// The `WITH (...)` settings of `CREATE CATALOG`. They may hold passwords, so `Debug` shows
/// the keys only.
#[derive(Clone, PartialEq, Eq)]
pub struct CatalogProperties(pub Vec<(String, PropertyValue)>);

impl std::fmt::Debug for CatalogProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(key, _)| format!("{key} = ***")))
            .finish()
    }
}

/// One `CREATE CATALOG` setting's value.
pub use fjord_config::CatalogSetting as PropertyValue;

/// How far a `FETCH` or `MOVE` goes. Cursors read forward only, so every movement ends at or
/// after the current position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// The next `n` rows (`FETCH n`, `NEXT`, `FORWARD n`).
    Next(u64),
    /// Every remaining row (`ALL`, `FORWARD ALL`).
    All,
    /// Row `n`, counting from 1 (`ABSOLUTE n`, `FIRST`).
    Absolute(u64),
    /// The row `n` after the current one (`RELATIVE n`).
    Relative(u64),
    /// The last row (`LAST`).
    Last,
}

/// `DECLARE name ... CURSOR [WITH HOLD] FOR query`, with the query as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclareCursor {
    pub name: String,
    pub hold: bool,
    pub query: String,
}

/// Significant tokens of a statement (no whitespace or comments), and whether it had any.
pub fn significant_tokens(sql: &str) -> Result<Vec<Token>, EngineError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|error| EngineError::syntax(format!("syntax error: {error}")))?;
    Ok(tokens
        .into_iter()
        .filter(|token| !matches!(token, Token::Whitespace(_) | Token::SemiColon))
        .collect())
}

/// Splits a query string into statements at top-level semicolons (not inside quotes,
/// comments or dollar-quoted strings). Statements are slices of the original text, so quoting
/// survives exactly; empty statements are dropped.
pub fn split_statements(sql: &str) -> Result<Vec<String>, EngineError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|error| EngineError::syntax(format!("syntax error: {error}")))?;
    let offsets = SourceOffsets::new(sql);
    let mut statements = Vec::new();
    let mut begin = 0usize;
    let mut significant = false;
    for token in tokens {
        match &token.token {
            Token::SemiColon => {
                let at = offsets.offset(token.span.start.line, token.span.start.column);
                if significant {
                    statements.push(sql[begin..at].to_string());
                }
                begin = (at + 1).min(sql.len());
                significant = false;
            }
            Token::Whitespace(_) => {}
            _ => significant = true,
        }
    }
    if significant {
        statements.push(sql[begin..].to_string());
    }
    Ok(statements)
}

/// Turns the tokenizer's (line, column) locations into byte offsets of the text.
struct SourceOffsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0usize];
        line_starts.extend(sql.match_indices('\n').map(|(index, _)| index + 1));
        SourceOffsets { sql, line_starts }
    }

    fn offset(&self, line: u64, column: u64) -> usize {
        let sql = self.sql;
        let start = self
            .line_starts
            .get((line as usize).saturating_sub(1))
            .copied()
            .unwrap_or(sql.len());
        sql[start..]
            .char_indices()
            .nth((column as usize).saturating_sub(1))
            .map(|(index, _)| start + index)
            .unwrap_or(sql.len())
    }
}

/// Whether a statement starts with `DECLARE` (see [`recognize_declare`]).
pub fn is_declare(tokens: &[Token]) -> bool {
    matches!(
        tokens.first(),
        Some(Token::Word(Word {
            keyword: Keyword::DECLARE,
            quote_style: None,
            ..
        }))
    )
}

/// Whether the statement is a COPY (read by [`crate::copy::recognize`]).
pub fn is_copy(tokens: &[Token]) -> bool {
    matches!(
        tokens.first(),
        Some(Token::Word(Word {
            keyword: Keyword::COPY,
            quote_style: None,
            ..
        }))
    )
}

/// Reads `DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR
/// [{WITH | WITHOUT} HOLD] FOR query`, keeping the query's text exactly as written.
pub fn recognize_declare(sql: &str) -> Result<DeclareCursor, EngineError> {
    let located = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|error| EngineError::syntax(format!("syntax error: {error}")))?;
    let located: Vec<_> = located
        .into_iter()
        .filter(|token| !matches!(token.token, Token::Whitespace(_)))
        .collect();
    let tokens: Vec<Token> = located.iter().map(|token| token.token.clone()).collect();
    let mut cursor = Cursor {
        tokens: &tokens,
        position: 0,
    };
    if !cursor.keyword(Keyword::DECLARE) {
        return Err(EngineError::syntax("expected DECLARE"));
    }
    let name = cursor
        .identifier()
        .ok_or_else(|| EngineError::syntax("DECLARE needs a cursor name"))?;
    if cursor.keyword(Keyword::BINARY) {
        return Err(EngineError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "BINARY cursors are not supported; ask for binary results through the extended protocol",
        ));
    }
    let _ = cursor.keyword(Keyword::ASENSITIVE) || cursor.keyword(Keyword::INSENSITIVE);
    if cursor.keyword(Keyword::SCROLL) {
        return Err(EngineError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "SCROLL cursors are not supported: fjord cursors read forward only",
        ));
    }
    let _ = cursor.keyword(Keyword::NO) && cursor.keyword(Keyword::SCROLL);
    if !cursor.keyword(Keyword::CURSOR) {
        return Err(EngineError::syntax("DECLARE needs CURSOR after the name"));
    }
    let hold = cursor.keyword(Keyword::WITH);
    if (hold || cursor.keyword(Keyword::WITHOUT)) && !cursor.keyword(Keyword::HOLD) {
        return Err(EngineError::syntax("expected HOLD after WITH or WITHOUT"));
    }
    if !cursor.keyword(Keyword::FOR) {
        return Err(EngineError::syntax("DECLARE CURSOR needs FOR and a query"));
    }
    let start = located
        .get(cursor.position)
        .filter(|token| !matches!(token.token, Token::EOF | Token::SemiColon))
        .ok_or_else(|| EngineError::syntax("DECLARE CURSOR needs a query after FOR"))?;
    let offsets = SourceOffsets::new(sql);
    let query = sql[offsets.offset(start.span.start.line, start.span.start.column)..]
        .trim_end()
        .trim_end_matches(';')
        .to_string();
    Ok(DeclareCursor { name, hold, query })
}

struct Cursor<'a> {
    tokens: &'a [Token],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.position)
    }

    fn keyword(&mut self, keyword: Keyword) -> bool {
        match self.peek() {
            Some(Token::Word(Word {
                keyword: found,
                quote_style: None,
                ..
            })) if *found == keyword => {
                self.position += 1;
                true
            }
            _ => false,
        }
    }

    fn word_ci(&mut self, text: &str) -> bool {
        match self.peek() {
            Some(Token::Word(Word {
                value,
                quote_style: None,
                ..
            })) if value.eq_ignore_ascii_case(text) => {
                self.position += 1;
                true
            }
            _ => false,
        }
    }

    fn at_end(&self) -> bool {
        self.position >= self.tokens.len()
    }

    /// An identifier: unquoted ones fold to lowercase, quoted ones keep their case.
    fn identifier(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(word)) => {
                self.position += 1;
                Some(match word.quote_style {
                    Some(_) => word.value.clone(),
                    None => word.value.to_lowercase(),
                })
            }
            _ => None,
        }
    }

    /// `a`, `a.b` or `a.b.c`.
    fn qualified_name(&mut self) -> Option<Vec<String>> {
        let mut parts = vec![self.identifier()?];
        while matches!(self.peek(), Some(Token::Period)) {
            self.position += 1;
            parts.push(self.identifier()?);
        }
        Some(parts)
    }

    fn string(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::SingleQuotedString(text)) | Some(Token::EscapedStringLiteral(text)) => {
                self.position += 1;
                Some(text.clone())
            }
            _ => None,
        }
    }

    /// `LIKE 'pattern'` if present.
    fn like(&mut self) -> Result<Option<String>, EngineError> {
        if self.keyword(Keyword::LIKE) {
            return self
                .string()
                .map(Some)
                .ok_or_else(|| EngineError::syntax("LIKE needs a quoted pattern"));
        }
        Ok(None)
    }

    /// A variable value: everything left, as text (`'a'`, `a`, `1`, `a, b`).
    fn rest_as_value(&mut self) -> Option<String> {
        let mut parts = Vec::new();
        while let Some(token) = self.peek() {
            self.position += 1;
            match token {
                Token::SingleQuotedString(text) => parts.push(text.clone()),
                Token::Word(word) => parts.push(word.value.clone()),
                Token::Number(number, _) => parts.push(number.clone()),
                Token::Comma => parts.push(",".into()),
                Token::Minus => parts.push("-".into()),
                other => parts.push(other.to_string()),
            }
        }
        if parts.is_empty() {
            return None;
        }
        let mut value = String::new();
        for part in parts {
            if part == "," {
                value.push_str(", ");
            } else {
                if !value.is_empty()
                    && !value.ends_with(", ")
                    && !value.ends_with('-')
                    && part != "-"
                {
                    value.push(' ');
                }
                value.push_str(&part);
            }
        }
        Some(value)
    }
}

/// Recognizes a statement fjord handles itself; `Ok(None)` means "plan it with DataFusion".
pub fn recognize(tokens: &[Token]) -> Result<Option<Command>, EngineError> {
    let mut cursor = Cursor {
        tokens,
        position: 0,
    };
    let command = if cursor.keyword(Keyword::SHOW) {
        recognize_show(&mut cursor)?
    } else if cursor.keyword(Keyword::DESCRIBE) || cursor.keyword(Keyword::DESC) {
        let name = cursor
            .qualified_name()
            .ok_or_else(|| EngineError::syntax("DESCRIBE needs a table name"))?;
        Some(Command::ShowColumns { name })
    } else if cursor.keyword(Keyword::USE) {
        let name = cursor
            .qualified_name()
            .ok_or_else(|| EngineError::syntax("USE needs catalog.schema or schema"))?;
        match name.as_slice() {
            [schema] => Some(Command::Use {
                catalog: None,
                schema: schema.clone(),
            }),
            [catalog, schema] => Some(Command::Use {
                catalog: Some(catalog.clone()),
                schema: schema.clone(),
            }),
            _ => return Err(EngineError::syntax("USE takes catalog.schema or schema")),
        }
    } else if cursor.keyword(Keyword::BEGIN)
        || (cursor.keyword(Keyword::START) && cursor.keyword(Keyword::TRANSACTION))
    {
        // Options such as ISOLATION LEVEL or READ ONLY change nothing for read queries.
        Some(Command::Begin)
    } else if cursor.keyword(Keyword::COMMIT) || cursor.keyword(Keyword::END) {
        Some(Command::Commit)
    } else if cursor.keyword(Keyword::ROLLBACK) || cursor.keyword(Keyword::ABORT) {
        Some(Command::Rollback)
    } else if cursor.keyword(Keyword::DISCARD) {
        if cursor.keyword(Keyword::ALL) {
            Some(Command::DiscardAll)
        } else {
            return Err(EngineError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "only DISCARD ALL is supported",
            ));
        }
    } else if cursor.keyword(Keyword::RESET) {
        if cursor.keyword(Keyword::ALL) {
            Some(Command::ResetAll)
        } else {
            let name = cursor
                .qualified_name()
                .ok_or_else(|| EngineError::syntax("RESET needs a variable name"))?;
            Some(Command::SetVariable {
                name: name.join("."),
                value: None,
            })
        }
    } else if cursor.keyword(Keyword::SET) {
        recognize_set(&mut cursor)?
    } else if cursor.keyword(Keyword::CREATE) {
        if cursor.keyword(Keyword::CATALOG) {
            Some(recognize_create_catalog(&mut cursor)?)
        } else if cursor.keyword(Keyword::SCHEMA) || cursor.keyword(Keyword::DATABASE) {
            let if_not_exists = cursor.keyword(Keyword::IF)
                && cursor.keyword(Keyword::NOT)
                && cursor.keyword(Keyword::EXISTS);
            let name = cursor
                .qualified_name()
                .ok_or_else(|| EngineError::syntax("CREATE SCHEMA needs a name"))?;
            if !cursor.at_end() {
                return Err(EngineError::syntax(
                    "unexpected text after CREATE SCHEMA name",
                ));
            }
            Some(Command::CreateSchema {
                name,
                if_not_exists,
            })
        } else {
            None
        }
    } else if cursor.keyword(Keyword::CALL) {
        Some(recognize_call(&mut cursor)?)
    } else if cursor.keyword(Keyword::FETCH) {
        Some(recognize_fetch(&mut cursor, true)?)
    } else if cursor.word_ci("MOVE") {
        Some(recognize_fetch(&mut cursor, false)?)
    } else if cursor.keyword(Keyword::CLOSE) {
        let name = if cursor.keyword(Keyword::ALL) {
            None
        } else {
            Some(
                cursor
                    .identifier()
                    .ok_or_else(|| EngineError::syntax("CLOSE needs a cursor name or ALL"))?,
            )
        };
        if !cursor.at_end() {
            return Err(EngineError::syntax("unexpected text after CLOSE"));
        }
        Some(Command::CloseCursor { name })
    } else if cursor.keyword(Keyword::DROP) {
        if cursor.keyword(Keyword::CATALOG) {
            let if_exists = cursor.keyword(Keyword::IF) && cursor.keyword(Keyword::EXISTS);
            let name = cursor
                .identifier()
                .ok_or_else(|| EngineError::syntax("DROP CATALOG needs a catalog name"))?;
            // Trino's RESTRICT is what happens anyway; CASCADE has nothing more to drop.
            let _ = cursor.keyword(Keyword::RESTRICT) || cursor.keyword(Keyword::CASCADE);
            if !cursor.at_end() {
                return Err(EngineError::syntax(
                    "unexpected text after DROP CATALOG name",
                ));
            }
            Some(Command::DropCatalog { name, if_exists })
        } else if cursor.keyword(Keyword::TABLE) {
            let if_exists = cursor.keyword(Keyword::IF) && cursor.keyword(Keyword::EXISTS);
            let name = cursor
                .qualified_name()
                .ok_or_else(|| EngineError::syntax("DROP TABLE needs a name"))?;
            Some(Command::DropTable { name, if_exists })
        } else {
            None
        }
    } else {
        None
    };
    Ok(command)
}

/// The rest of `CREATE CATALOG`: `[IF NOT EXISTS] name USING type [WITH (key = value, ...)]`.
/// Keys are names (`"s3.region"` quoted for a nested key); values are quoted strings, integers,
/// `true`/`false` or `ARRAY['a', ...]`. Errors never repeat a value.
fn recognize_create_catalog(cursor: &mut Cursor<'_>) -> Result<Command, EngineError> {
    let if_not_exists = cursor.keyword(Keyword::IF)
        && cursor.keyword(Keyword::NOT)
        && cursor.keyword(Keyword::EXISTS);
    let name = cursor
        .identifier()
        .ok_or_else(|| EngineError::syntax("CREATE CATALOG needs a catalog name"))?;
    if !cursor.keyword(Keyword::USING) {
        return Err(EngineError::syntax(
            "CREATE CATALOG needs USING postgres or USING iceberg after the name",
        ));
    }
    let type_name = cursor
        .identifier()
        .ok_or_else(|| EngineError::syntax("USING needs a catalog type: postgres or iceberg"))?;
    let mut properties = Vec::new();
    if cursor.keyword(Keyword::WITH) {
        if !matches!(cursor.peek(), Some(Token::LParen)) {
            return Err(EngineError::syntax("WITH needs ( key = value, ... )"));
        }
        cursor.position += 1;
        loop {
            let key = cursor
                .identifier()
                .ok_or_else(|| EngineError::syntax("CREATE CATALOG: expected a property name"))?;
            if !matches!(cursor.peek(), Some(Token::Eq)) {
                return Err(EngineError::syntax(format!(
                    "CREATE CATALOG: expected = after property `{key}`"
                )));
            }
            cursor.position += 1;
            let value = property_value(cursor).ok_or_else(|| {
                EngineError::syntax(format!(
                    "CREATE CATALOG: property `{key}` needs a quoted string, an integer, true, \
                     false or ARRAY['...']"
                ))
            })?;
            if properties.iter().any(|(seen, _)| *seen == key) {
                return Err(EngineError::syntax(format!(
                    "CREATE CATALOG: property `{key}` is given twice"
                )));
            }
            properties.push((key, value));
            match cursor.peek() {
                Some(Token::Comma) => cursor.position += 1,
                Some(Token::RParen) => {
                    cursor.position += 1;
                    break;
                }
                _ => {
                    return Err(EngineError::syntax(
                        "CREATE CATALOG: expected , or ) after a property",
                    ));
                }
            }
        }
    }
    if !cursor.at_end() {
        return Err(EngineError::syntax(
            "unexpected text after CREATE CATALOG's properties",
        ));
    }
    Ok(Command::CreateCatalog {
        name,
        type_name,
        properties: CatalogProperties(properties),
        if_not_exists,
    })
}

/// The rest of `CALL`: only `system.runtime.kill_query`, with its arguments by name
/// (`query_id => '...'`, `message => '...'`) or by position.
fn recognize_call(cursor: &mut Cursor<'_>) -> Result<Command, EngineError> {
    let name = cursor
        .qualified_name()
        .ok_or_else(|| EngineError::syntax("CALL needs a procedure name"))?;
    let known = matches!(
        name.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["system", "runtime", "kill_query"] | ["runtime", "kill_query"] | ["kill_query"]
    );
    if !known {
        return Err(EngineError::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!(
                "procedure {} does not exist; fjord has system.runtime.kill_query",
                name.join(".")
            ),
        ));
    }
    let usage = "kill_query takes (query_id => '...' [, message => '...'])";
    if !matches!(cursor.peek(), Some(Token::LParen)) {
        return Err(EngineError::syntax(usage));
    }
    cursor.position += 1;
    let mut query_id = None;
    let mut message = None;
    let mut position = 0;
    while !matches!(cursor.peek(), Some(Token::RParen)) {
        let named = match (cursor.peek(), cursor.tokens.get(cursor.position + 1)) {
            (Some(Token::Word(_)), Some(Token::RArrow)) => {
                let argument = cursor.identifier().unwrap_or_default();
                cursor.position += 1;
                Some(argument)
            }
            _ => None,
        };
        let value = cursor.string().ok_or_else(|| EngineError::syntax(usage))?;
        match named
            .as_deref()
            .unwrap_or(if position == 0 { "query_id" } else { "message" })
        {
            "query_id" => query_id = Some(value),
            "message" => message = Some(value),
            other => {
                return Err(EngineError::syntax(format!(
                    "kill_query has no argument `{other}`; {usage}"
                )));
            }
        }
        position += 1;
        match cursor.peek() {
            Some(Token::Comma) => cursor.position += 1,
            Some(Token::RParen) => {}
            _ => return Err(EngineError::syntax(usage)),
        }
    }
    cursor.position += 1;
    if !cursor.at_end() {
        return Err(EngineError::syntax(usage));
    }
    Ok(Command::KillQuery {
        query_id: query_id.ok_or_else(|| EngineError::syntax(usage))?,
        message,
    })
}

fn property_value(cursor: &mut Cursor<'_>) -> Option<PropertyValue> {
    if let Some(text) = cursor.string() {
        return Some(PropertyValue::Text(text));
    }
    if cursor.keyword(Keyword::TRUE) {
        return Some(PropertyValue::Boolean(true));
    }
    if cursor.keyword(Keyword::FALSE) {
        return Some(PropertyValue::Boolean(false));
    }
    if cursor.keyword(Keyword::ARRAY) {
        if !matches!(cursor.peek(), Some(Token::LBracket)) {
            return None;
        }
        cursor.position += 1;
        let mut items = Vec::new();
        if matches!(cursor.peek(), Some(Token::RBracket)) {
            cursor.position += 1;
            return Some(PropertyValue::List(items));
        }
        loop {
            items.push(cursor.string()?);
            match cursor.peek() {
                Some(Token::Comma) => cursor.position += 1,
                Some(Token::RBracket) => {
                    cursor.position += 1;
                    return Some(PropertyValue::List(items));
                }
                _ => return None,
            }
        }
    }
    let negative = matches!(cursor.peek(), Some(Token::Minus));
    if negative {
        cursor.position += 1;
    }
    match cursor.peek() {
        Some(Token::Number(number, _)) => {
            let value: i64 = number.parse().ok()?;
            cursor.position += 1;
            Some(PropertyValue::Integer(if negative {
                -value
            } else {
                value
            }))
        }
        _ => None,
    }
}

/// `sql` as it may be logged: the settings of `CREATE CATALOG` (which may hold passwords) are
/// left out; every other statement is logged as it is.
pub fn loggable(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql
        .as_bytes()
        .windows(7)
        .any(|window| window.eq_ignore_ascii_case(b"catalog"))
    {
        return sql.into();
    }
    let Ok(tokens) = significant_tokens(sql) else {
        return sql.into();
    };
    let mut cursor = Cursor {
        tokens: &tokens,
        position: 0,
    };
    if cursor.keyword(Keyword::CREATE) && cursor.keyword(Keyword::CATALOG) {
        let _ = cursor.keyword(Keyword::IF)
            && cursor.keyword(Keyword::NOT)
            && cursor.keyword(Keyword::EXISTS);
        let name = cursor.identifier().unwrap_or_default();
        return format!("CREATE CATALOG {name} ... (settings not logged)").into();
    }
    sql.into()
}

/// `FETCH [direction] [FROM | IN] name` and the same for `MOVE`, as PostgreSQL reads them.
fn recognize_fetch(cursor: &mut Cursor<'_>, fetch: bool) -> Result<Command, EngineError> {
    let verb = if fetch { "FETCH" } else { "MOVE" };
    let backward = || {
        EngineError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "cursor can only scan forward: fjord cursors do not move backward",
        )
    };
    let count = |cursor: &mut Cursor<'_>| -> Result<Option<i64>, EngineError> {
        let negative = matches!(cursor.peek(), Some(Token::Minus));
        if negative || matches!(cursor.peek(), Some(Token::Plus)) {
            cursor.position += 1;
        }
        match cursor.peek() {
            Some(Token::Number(number, _)) => {
                cursor.position += 1;
                let value: i64 = number.parse().map_err(|_| {
                    EngineError::syntax(format!(
                        "{verb} needs a whole number of rows, not {number}"
                    ))
                })?;
                Ok(Some(if negative { -value } else { value }))
            }
            _ if negative => Err(EngineError::syntax(format!(
                "{verb} needs a number after -"
            ))),
            _ => Ok(None),
        }
    };
    let forward = |n: i64| -> Result<u64, EngineError> { u64::try_from(n).map_err(|_| backward()) };
    let movement = if cursor.keyword(Keyword::NEXT) {
        Movement::Next(1)
    } else if cursor.keyword(Keyword::PRIOR) || cursor.keyword(Keyword::BACKWARD) {
        return Err(backward());
    } else if cursor.keyword(Keyword::FIRST) {
        Movement::Absolute(1)
    } else if cursor.keyword(Keyword::LAST) {
        Movement::Last
    } else if cursor.keyword(Keyword::ABSOLUTE) {
        let n = count(cursor)?
            .ok_or_else(|| EngineError::syntax(format!("{verb} ABSOLUTE needs a row number")))?;
        if n <= 0 {
            return Err(backward());
        }
        Movement::Absolute(n as u64)
    } else if cursor.keyword(Keyword::RELATIVE) {
        let n = count(cursor)?
            .ok_or_else(|| EngineError::syntax(format!("{verb} RELATIVE needs a row count")))?;
        if n <= 0 && fetch {
            return Err(backward());
        }
        Movement::Relative(forward(n)?)
    } else if cursor.keyword(Keyword::ALL) {
        Movement::All
    } else if cursor.keyword(Keyword::FORWARD) {
        if cursor.keyword(Keyword::ALL) {
            Movement::All
        } else {
            Movement::Next(forward(count(cursor)?.unwrap_or(1))?)
        }
    } else {
        Movement::Next(forward(count(cursor)?.unwrap_or(1))?)
    };
    let _ = cursor.keyword(Keyword::FROM) || cursor.keyword(Keyword::IN);
    let name = cursor
        .identifier()
        .ok_or_else(|| EngineError::syntax(format!("{verb} needs a cursor name")))?;
    if !cursor.at_end() {
        return Err(EngineError::syntax(format!(
            "unexpected text after {verb} {name}"
        )));
    }
    Ok(Command::Fetch {
        cursor: name,
        movement,
        fetch,
    })
}

fn recognize_show(cursor: &mut Cursor<'_>) -> Result<Option<Command>, EngineError> {
    if cursor.word_ci("CATALOGS") {
        let like = cursor.like()?;
        return Ok(Some(Command::ShowCatalogs { like }));
    }
    if cursor.keyword(Keyword::SCHEMAS) || cursor.keyword(Keyword::DATABASES) {
        let catalog = if cursor.keyword(Keyword::FROM) || cursor.keyword(Keyword::IN) {
            Some(
                cursor
                    .identifier()
                    .ok_or_else(|| EngineError::syntax("SHOW SCHEMAS FROM needs a catalog"))?,
            )
        } else {
            None
        };
        let like = cursor.like()?;
        return Ok(Some(Command::ShowSchemas { catalog, like }));
    }
    if cursor.keyword(Keyword::TABLES) {
        let (catalog, schema) = if cursor.keyword(Keyword::FROM) || cursor.keyword(Keyword::IN) {
            match cursor.qualified_name().as_deref() {
                Some([schema]) => (None, Some(schema.clone())),
                Some([catalog, schema]) => (Some(catalog.clone()), Some(schema.clone())),
                _ => {
                    return Err(EngineError::syntax(
                        "SHOW TABLES FROM takes catalog.schema or schema",
                    ));
                }
            }
        } else {
            (None, None)
        };
        let like = cursor.like()?;
        return Ok(Some(Command::ShowTables {
            catalog,
            schema,
            like,
        }));
    }
    if cursor.keyword(Keyword::COLUMNS) {
        if !(cursor.keyword(Keyword::FROM) || cursor.keyword(Keyword::IN)) {
            return Err(EngineError::syntax("SHOW COLUMNS needs FROM table"));
        }
        let name = cursor
            .qualified_name()
            .ok_or_else(|| EngineError::syntax("SHOW COLUMNS FROM needs a table"))?;
        return Ok(Some(Command::ShowColumns { name }));
    }
    if cursor.keyword(Keyword::TRANSACTION)
        && cursor.keyword(Keyword::ISOLATION)
        && cursor.keyword(Keyword::LEVEL)
    {
        return Ok(Some(Command::ShowVariable {
            name: "transaction_isolation".into(),
        }));
    }
    if cursor.keyword(Keyword::TIME) && cursor.keyword(Keyword::ZONE) {
        return Ok(Some(Command::ShowVariable {
            name: "timezone".into(),
        }));
    }
    if let Some(name) = cursor.qualified_name() {
        let name = name.join(".");
        if cursor.at_end() && !name.starts_with("datafusion.") && name != "all" {
            return Ok(Some(Command::ShowVariable { name }));
        }
    }
    Ok(None)
}

fn recognize_set(cursor: &mut Cursor<'_>) -> Result<Option<Command>, EngineError> {
    let _ = cursor.keyword(Keyword::SESSION) || cursor.keyword(Keyword::LOCAL);
    if cursor.keyword(Keyword::TIME) && cursor.keyword(Keyword::ZONE) {
        let value = cursor.rest_as_value();
        let value = match value.as_deref() {
            None => return Err(EngineError::syntax("SET TIME ZONE needs a value")),
            Some(v) if v.eq_ignore_ascii_case("default") || v.eq_ignore_ascii_case("local") => None,
            Some(v) => Some(v.to_string()),
        };
        return Ok(Some(Command::SetVariable {
            name: "timezone".into(),
            value,
        }));
    }
    let Some(name) = cursor.qualified_name() else {
        return Ok(None);
    };
    let name = name.join(".");
    if name.starts_with("datafusion.") {
        // DataFusion's own settings go to its planner, which validates them.
        return Ok(None);
    }
    if !(cursor.keyword(Keyword::TO) || matches!(cursor.peek(), Some(Token::Eq))) {
        return Err(EngineError::syntax(format!(
            "SET {name} needs = or TO and a value"
        )));
    }
    if matches!(cursor.peek(), Some(Token::Eq)) {
        cursor.position += 1;
    }
    let value = cursor
        .rest_as_value()
        .ok_or_else(|| EngineError::syntax(format!("SET {name} needs a value")))?;
    let value = if value.eq_ignore_ascii_case("default") {
        None
    } else {
        Some(value)
    };
    Ok(Some(Command::SetVariable { name, value }))
}

/// SQL `LIKE` matching with `%` and `_` (no escape character), as SHOW ... LIKE uses.
pub fn like_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative matching with backtracking to the last `%`.
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(star_position) = star {
            p = star_position + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == '%' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Option<Command> {
        recognize(&significant_tokens(sql).unwrap()).unwrap()
    }

    #[test]
    fn recognizes_trino_browsing_statements() {
        assert_eq!(
            parse("SHOW CATALOGS"),
            Some(Command::ShowCatalogs { like: None })
        );
        assert_eq!(
            parse("show schemas from Iceberg like 'data%';"),
            Some(Command::ShowSchemas {
                catalog: Some("iceberg".into()),
                like: Some("data%".into())
            })
        );
        assert_eq!(
            parse(r#"SHOW TABLES FROM postgresql."Public""#),
            Some(Command::ShowTables {
                catalog: Some("postgresql".into()),
                schema: Some("Public".into()),
                like: None
            })
        );
        assert_eq!(
            parse("DESCRIBE iceberg.data_on_eks.cat_interactions_raw"),
            Some(Command::ShowColumns {
                name: vec![
                    "iceberg".into(),
                    "data_on_eks".into(),
                    "cat_interactions_raw".into()
                ]
            })
        );
        assert_eq!(
            parse("USE postgresql.public"),
            Some(Command::Use {
                catalog: Some("postgresql".into()),
                schema: "public".into()
            })
        );
        assert_eq!(parse("SELECT 1"), None);
        assert_eq!(parse("SHOW datafusion.execution.batch_size"), None);
    }

    #[test]
    fn recognizes_session_statements() {
        assert_eq!(
            parse("SET application_name = 'psql'"),
            Some(Command::SetVariable {
                name: "application_name".into(),
                value: Some("psql".into())
            })
        );
        assert_eq!(
            parse("SET search_path TO public, data_on_eks"),
            Some(Command::SetVariable {
                name: "search_path".into(),
                value: Some("public, data_on_eks".into())
            })
        );
        assert_eq!(
            parse("SET TIME ZONE 'UTC'"),
            Some(Command::SetVariable {
                name: "timezone".into(),
                value: Some("UTC".into())
            })
        );
        assert_eq!(
            parse("SET extra_float_digits = 3"),
            Some(Command::SetVariable {
                name: "extra_float_digits".into(),
                value: Some("3".into())
            })
        );
        assert_eq!(parse("SET datafusion.execution.batch_size = 10"), None);
        assert_eq!(
            parse("show transaction isolation level"),
            Some(Command::ShowVariable {
                name: "transaction_isolation".into()
            })
        );
        assert_eq!(parse("BEGIN READ ONLY"), Some(Command::Begin));
        assert_eq!(parse("DISCARD ALL"), Some(Command::DiscardAll));
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let statements = split_statements("SELECT ';'; SELECT 2 -- c;\n; ;").unwrap();
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert_eq!(statements[0], "SELECT ';'");
        let quoted = split_statements("SELECT 'O''Malley; x' AS ü;\nSELECT $$a;b$$").unwrap();
        assert_eq!(
            quoted,
            vec![
                "SELECT 'O''Malley; x' AS ü".to_string(),
                "\nSELECT $$a;b$$".to_string()
            ]
        );
    }

    #[test]
    fn like_patterns() {
        assert!(like_match("cat%", "cat_interactions_raw"));
        assert!(like_match("%raw", "cat_interactions_raw"));
        assert!(like_match("c_t%", "cats"));
        assert!(!like_match("dog%", "cats"));
        assert!(like_match("%", ""));
    }

    #[test]
    fn recognizes_create_and_drop_catalog() {
        let command = parse(
            "CREATE CATALOG IF NOT EXISTS crm USING postgres WITH (host = 'db', port = 6543, \
             password = '${CRM_PW}', schemas = ARRAY['public', 'sales'], \"s3.path_style\" = true)",
        );
        let Some(Command::CreateCatalog {
            name,
            type_name,
            properties,
            if_not_exists,
        }) = command
        else {
            panic!("not recognized: {command:?}");
        };
        assert_eq!(
            (name.as_str(), type_name.as_str(), if_not_exists),
            ("crm", "postgres", true)
        );
        assert_eq!(
            properties.0,
            vec![
                ("host".to_string(), PropertyValue::Text("db".into())),
                ("port".to_string(), PropertyValue::Integer(6543)),
                (
                    "password".to_string(),
                    PropertyValue::Text("${CRM_PW}".into())
                ),
                (
                    "schemas".to_string(),
                    PropertyValue::List(vec!["public".into(), "sales".into()])
                ),
                ("s3.path_style".to_string(), PropertyValue::Boolean(true)),
            ]
        );
        // Debug output, which logs may show, has the keys but no value.
        let shown = format!("{properties:?}");
        assert!(
            shown.contains("password") && !shown.contains("CRM_PW"),
            "{shown}"
        );
        assert_eq!(
            parse("drop catalog if exists crm"),
            Some(Command::DropCatalog {
                name: "crm".into(),
                if_exists: true
            })
        );
        assert_eq!(
            parse("DROP TABLE t"),
            Some(Command::DropTable {
                name: vec!["t".into()],
                if_exists: false
            })
        );
        let error = recognize(
            &significant_tokens("CREATE CATALOG c USING postgres WITH (password = now())").unwrap(),
        )
        .unwrap_err();
        assert!(error.message.contains("password"), "{}", error.message);
        assert!(
            recognize(&significant_tokens("CREATE CATALOG c WITH (a = '1')").unwrap()).is_err()
        );
    }

    #[test]
    fn create_catalog_is_logged_without_its_settings() {
        let logged = loggable("create catalog crm using postgres with (password = 'hunter2')");
        assert!(!logged.contains("hunter2"), "{logged}");
        assert!(logged.contains("crm"), "{logged}");
        assert_eq!(loggable("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn recognizes_kill_query_by_name_and_by_position() {
        let expected = Some(Command::KillQuery {
            query_id: "20261204_140000_00001".into(),
            message: Some("too slow".into()),
        });
        assert_eq!(
            parse(
                "CALL system.runtime.kill_query(query_id => '20261204_140000_00001', message => 'too slow')"
            ),
            expected
        );
        assert_eq!(
            parse("call system.runtime.kill_query('20261204_140000_00001', 'too slow')"),
            expected
        );
        let error =
            recognize(&significant_tokens("CALL system.runtime.nope('x')").unwrap()).unwrap_err();
        assert_eq!(error.sqlstate, "42883");
    }
}
