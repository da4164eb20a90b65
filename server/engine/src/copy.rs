//! `COPY table TO STDOUT` and `COPY (query) TO STDOUT`: a query's rows in one of Postgres's
//! COPY formats, which is how psql's `\copy ... to`, JDBC's `CopyManager` and psycopg's
//! `cursor.copy()` export data.
//!
//! Only `TO STDOUT` is accepted. COPY to or from a file or program would read or write the
//! server's file system (DataFusion's own `COPY ... TO 'path'` writes files), so it is refused
//! as Postgres refuses it to ordinary users; `COPY ... FROM STDIN` is not offered (tables are
//! written with INSERT). The frontend turns the rows into COPY data; this module only reads
//! the statement and its options, with Postgres's rules and messages.

use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{EngineError, sqlstate};

/// The three COPY formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

/// Which columns CSV output quotes even when they would not need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceQuote {
    None,
    All,
    Columns(Vec<String>),
}

/// How a `COPY ... TO STDOUT` writes its rows; defaults as in Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    /// Between columns: a tab in text format, a comma in CSV.
    pub delimiter: u8,
    /// How a NULL is written: `\N` in text format, an unquoted empty string in CSV.
    pub null: String,
    /// A first line with the column names (text and CSV).
    pub header: bool,
    /// CSV's quote and escape characters (both `"` by default).
    pub quote: u8,
    pub escape: u8,
    pub force_quote: ForceQuote,
}

impl CopyOptions {
    fn defaults(format: CopyFormat) -> Self {
        CopyOptions {
            format,
            delimiter: if format == CopyFormat::Csv {
                b','
            } else {
                b'\t'
            },
            null: if format == CopyFormat::Csv {
                String::new()
            } else {
                "\\N".to_string()
            },
            header: false,
            quote: b'"',
            escape: b'"',
            force_quote: ForceQuote::None,
        }
    }
}

/// A recognized `COPY ... TO STDOUT`: the query whose rows it writes, and how.
#[derive(Debug, Clone)]
pub struct CopyStatement {
    pub query: String,
    pub options: CopyOptions,
}

/// Options as written, before they are checked against the format.
#[derive(Default)]
struct Written {
    format: Option<CopyFormat>,
    delimiter: Option<char>,
    null: Option<String>,
    header: Option<bool>,
    quote: Option<char>,
    escape: Option<char>,
    force_quote: Option<ForceQuote>,
}

fn unsupported(message: impl Into<String>) -> EngineError {
    EngineError::new(sqlstate::FEATURE_NOT_SUPPORTED, message)
}

fn syntax(message: impl Into<String>) -> EngineError {
    EngineError::new(sqlstate::SYNTAX_ERROR, message)
}

fn from_stdin() -> EngineError {
    unsupported("COPY FROM STDIN is not supported: write rows into a table with INSERT")
}

/// Whether the statement names STDIN (as a keyword, not inside a literal or identifier).
fn mentions_stdin(sql: &str) -> bool {
    crate::commands::significant_tokens(sql).is_ok_and(|tokens| {
        tokens.iter().any(|token| {
            matches!(token, Token::Word(word) if word.keyword == Keyword::STDIN && word.quote_style.is_none())
        })
    })
}

/// Reads a COPY statement; anything but `COPY ... TO STDOUT` is refused with the reason.
pub fn recognize(sql: &str) -> Result<CopyStatement, EngineError> {
    let mut statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => statements,
        // The parser reads the rows of `COPY ... FROM STDIN` inline and fails without them.
        Err(_) if mentions_stdin(sql) => return Err(from_stdin()),
        Err(error) => return Err(syntax(format!("syntax error: {error}"))),
    };
    if statements.len() != 1 {
        return Err(syntax("expected one COPY statement"));
    }
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = statements.remove(0)
    else {
        return Err(syntax("expected a COPY statement"));
    };
    match (&target, to) {
        (CopyTarget::Stdout, true) => {}
        (CopyTarget::Stdin, false) => return Err(from_stdin()),
        (CopyTarget::File { .. } | CopyTarget::Program { .. }, _) => {
            return Err(EngineError::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "COPY to or from a file or program is not allowed: it would use the server's \
                 file system; use COPY ... TO STDOUT (psql's \\copy) to write on the client",
            ));
        }
        _ => return Err(syntax("COPY TO needs STDOUT as its target")),
    }
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let list = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("SELECT {list} FROM {table_name}")
        }
    };

    let mut written = Written::default();
    for option in options {
        match option {
            CopyOption::Format(name) => {
                written.format = Some(match name.value.to_ascii_lowercase().as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => CopyFormat::Binary,
                    other => {
                        return Err(EngineError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("COPY format \"{other}\" not recognized"),
                        ));
                    }
                })
            }
            CopyOption::Delimiter(c) => written.delimiter = Some(c),
            CopyOption::Null(null) => written.null = Some(null),
            CopyOption::Header(header) => written.header = Some(header),
            CopyOption::Quote(c) => written.quote = Some(c),
            CopyOption::Escape(c) => written.escape = Some(c),
            CopyOption::ForceQuote(columns) => {
                written.force_quote = Some(ForceQuote::Columns(
                    columns.into_iter().map(|ident| ident.value).collect(),
                ))
            }
            CopyOption::Encoding(encoding) => check_encoding(&encoding)?,
            CopyOption::ForceNotNull(_) => {
                return Err(unsupported(
                    "COPY FORCE_NOT_NULL cannot be used with COPY TO",
                ));
            }
            CopyOption::ForceNull(_) => {
                return Err(unsupported("COPY FORCE_NULL cannot be used with COPY TO"));
            }
            CopyOption::Freeze(_) => {
                return Err(unsupported("COPY FREEZE cannot be used with COPY TO"));
            }
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Binary => written.format = Some(CopyFormat::Binary),
            CopyLegacyOption::Delimiter(c) => written.delimiter = Some(c),
            CopyLegacyOption::Null(null) => written.null = Some(null),
            CopyLegacyOption::Header => written.header = Some(true),
            CopyLegacyOption::Csv(csv) => {
                written.format = Some(CopyFormat::Csv);
                for option in csv {
                    match option {
                        CopyLegacyCsvOption::Header => written.header = Some(true),
                        CopyLegacyCsvOption::Quote(c) => written.quote = Some(c),
                        CopyLegacyCsvOption::Escape(c) => written.escape = Some(c),
                        CopyLegacyCsvOption::ForceQuote(columns) => {
                            written.force_quote = Some(if columns.is_empty() {
                                ForceQuote::All
                            } else {
                                ForceQuote::Columns(
                                    columns.into_iter().map(|ident| ident.value).collect(),
                                )
                            })
                        }
                        CopyLegacyCsvOption::ForceNotNull(_) => {
                            return Err(unsupported(
                                "COPY FORCE NOT NULL cannot be used with COPY TO",
                            ));
                        }
                    }
                }
            }
            other => {
                return Err(syntax(format!(
                    "COPY option {other} is not a Postgres option"
                )));
            }
        }
    }
    let options = checked(written)?;
    Ok(CopyStatement { query, options })
}

fn check_encoding(encoding: &str) -> Result<(), EngineError> {
    let normalized: String = encoding
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    if normalized == "utf8" || normalized == "unicode" {
        Ok(())
    } else {
        Err(unsupported(format!(
            "COPY encoding \"{encoding}\" is not supported: fjord writes UTF8"
        )))
    }
}

/// One single-byte ASCII character, as COPY's delimiter, quote and escape must be.
fn one_byte(c: char, what: &str) -> Result<u8, EngineError> {
    if c.is_ascii() {
        Ok(c as u8)
    } else {
        Err(unsupported(format!(
            "COPY {what} must be a single one-byte character"
        )))
    }
}

/// Postgres's checks of COPY options against the format, with its messages.
fn checked(written: Written) -> Result<CopyOptions, EngineError> {
    let format = written.format.unwrap_or(CopyFormat::Text);
    let mut options = CopyOptions::defaults(format);
    if format == CopyFormat::Binary {
        for (given, name) in [
            (written.delimiter.is_some(), "DELIMITER"),
            (written.null.is_some(), "NULL"),
            (written.header == Some(true), "HEADER"),
        ] {
            if given {
                return Err(syntax(format!("cannot specify {name} in BINARY mode")));
            }
        }
    }
    if format != CopyFormat::Csv {
        for (given, name) in [
            (written.quote.is_some(), "quote"),
            (written.escape.is_some(), "escape"),
            (written.force_quote.is_some(), "force quote"),
        ] {
            if given {
                return Err(unsupported(format!(
                    "COPY {name} available only in CSV mode"
                )));
            }
        }
    }
    if let Some(c) = written.delimiter {
        options.delimiter = one_byte(c, "delimiter")?;
    }
    if matches!(options.delimiter, b'\r' | b'\n') {
        return Err(EngineError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "COPY delimiter cannot be newline or carriage return",
        ));
    }
    if format == CopyFormat::Text && options.delimiter == b'\\' {
        return Err(unsupported("COPY delimiter cannot be \"\\\""));
    }
    if let Some(null) = written.null {
        if null.contains(['\r', '\n']) {
            return Err(EngineError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                "COPY null representation cannot use newline or carriage return",
            ));
        }
        options.null = null;
    }
    options.header = written.header.unwrap_or(false);
    if let Some(c) = written.quote {
        options.quote = one_byte(c, "quote")?;
        options.escape = options.quote;
    }
    if let Some(c) = written.escape {
        options.escape = one_byte(c, "escape")?;
    }
    if format == CopyFormat::Csv {
        if options.delimiter == options.quote {
            return Err(unsupported("COPY delimiter and quote must be different"));
        }
        if options.null.contains(options.delimiter as char) {
            return Err(unsupported(
                "COPY delimiter character must not appear in the NULL specification",
            ));
        }
    }
    if let Some(force) = written.force_quote {
        options.force_quote = force;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_psql_and_drivers_send() {
        let copy = recognize("COPY (SELECT 1 AS a) TO STDOUT").unwrap();
        assert_eq!(copy.query, "SELECT 1 AS a");
        assert_eq!(copy.options, CopyOptions::defaults(CopyFormat::Text));

        let copy = recognize("COPY ( select * from t ) TO STDOUT with (format binary)").unwrap();
        assert_eq!(copy.options.format, CopyFormat::Binary);

        let copy =
            recognize("COPY iceberg.s.\"Odd Name\" (a, \"B\") TO STDOUT WITH CSV HEADER").unwrap();
        assert_eq!(copy.query, "SELECT a, \"B\" FROM iceberg.s.\"Odd Name\"");
        assert_eq!(copy.options.format, CopyFormat::Csv);
        assert!(copy.options.header);
        assert_eq!(copy.options.delimiter, b',');
        assert_eq!(copy.options.null, "");

        let copy = recognize(
            "COPY t TO STDOUT (FORMAT csv, DELIMITER ';', NULL 'NA', QUOTE '''', FORCE_QUOTE (a))",
        )
        .unwrap();
        assert_eq!(copy.options.delimiter, b';');
        assert_eq!(copy.options.null, "NA");
        assert_eq!(copy.options.quote, b'\'');
        assert_eq!(copy.options.escape, b'\'');
        assert_eq!(
            copy.options.force_quote,
            ForceQuote::Columns(vec!["a".into()])
        );
    }

    #[test]
    fn refuses_what_postgres_refuses() {
        let code = |sql: &str| recognize(sql).unwrap_err().sqlstate;
        assert_eq!(code("COPY t TO '/etc/passwd'"), "42501");
        assert_eq!(code("COPY t FROM '/etc/passwd'"), "42501");
        assert_eq!(code("COPY t TO PROGRAM 'rm -rf /'"), "42501");
        assert_eq!(code("COPY t FROM STDIN"), "0A000");
        assert_eq!(code("COPY t TO STDOUT (FORMAT xml)"), "22023");
        assert_eq!(code("COPY t TO STDOUT (FORMAT binary, HEADER)"), "42601");
        assert_eq!(code("COPY t TO STDOUT (QUOTE '\"')"), "0A000");
        assert_eq!(
            code("COPY t TO STDOUT (FORMAT csv, DELIMITER ',', QUOTE ',')"),
            "0A000"
        );
        assert_eq!(code("COPY t TO STDOUT (ENCODING 'LATIN1')"), "0A000");
        assert!(recognize("COPY t TO STDOUT (ENCODING 'UTF-8')").is_ok());
        assert_eq!(code("COPY t TO"), "42601");
    }
}
