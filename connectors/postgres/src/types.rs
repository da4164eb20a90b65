//! Mapping Postgres column types to Arrow types, and how each is read from a binary COPY.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

/// Key of the Arrow field metadata entry that keeps the Postgres type name of a column.
pub const PG_TYPE_METADATA_KEY: &str = "fjord.postgres_type";

/// Precision and scale given to `numeric` columns declared without them. Values with more
/// fractional digits are rounded to this scale.
pub const UNCONSTRAINED_NUMERIC: (u8, i8) = (38, 10);

/// How a column is read: its wire encoding in binary COPY and the Arrow type it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// text, varchar, bpchar, name, json: UTF-8 bytes.
    Text,
    /// jsonb: a version byte, then the JSON text.
    Jsonb,
    /// uuid: 16 bytes, exposed as its canonical lowercase text so that it joins with strings.
    Uuid,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// One-dimensional arrays of a mapped element type.
    Array(Box<PgKind>),
    /// Any other type, read through its text output (`column::text`).
    AsText,
}

impl PgKind {
    /// The kind for a built-in type OID and type modifier; `element` is the element type OID
    /// when `oid` is an array type.
    pub fn from_type(oid: u32, typmod: i32, element: Option<u32>) -> PgKind {
        match oid {
            16 => PgKind::Bool,
            17 => PgKind::Bytea,
            19 | 25 | 114 | 1042 | 1043 => PgKind::Text,
            20 => PgKind::Int8,
            21 => PgKind::Int2,
            23 => PgKind::Int4,
            26 => PgKind::Oid,
            700 => PgKind::Float4,
            701 => PgKind::Float8,
            1082 => PgKind::Date,
            1083 => PgKind::Time,
            1114 => PgKind::Timestamp,
            1184 => PgKind::TimestampTz,
            1186 => PgKind::Interval,
            1700 => numeric_kind(typmod),
            2950 => PgKind::Uuid,
            3802 => PgKind::Jsonb,
            _ => match element {
                // Arrays of unmapped types (and of arrays) go through text output as a whole.
                Some(element) => match PgKind::from_type(element, typmod, None) {
                    PgKind::AsText | PgKind::Array(_) => PgKind::AsText,
                    inner => PgKind::Array(Box::new(inner)),
                },
                // Includes the internal "char" type (oid 18): one byte on the wire, not UTF-8.
                None => PgKind::AsText,
            },
        }
    }

    pub fn data_type(&self) -> DataType {
        match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 | PgKind::Oid => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 => DataType::Float64,
            PgKind::Text | PgKind::Jsonb | PgKind::Uuid | PgKind::AsText => DataType::Utf8,
            PgKind::Bytea => DataType::Binary,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgKind::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            PgKind::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgKind::Array(inner) => {
                DataType::List(Arc::new(Field::new("item", inner.data_type(), true)))
            }
        }
    }

    /// Whether values of this kind reach Arrow as text although Postgres compares them as
    /// another type: filters on them must compare `column::text` to stay exact.
    pub fn is_text_view(&self) -> bool {
        matches!(self, PgKind::Jsonb | PgKind::Uuid | PgKind::AsText)
    }
}

fn numeric_kind(typmod: i32) -> PgKind {
    if typmod < 4 {
        let (precision, scale) = UNCONSTRAINED_NUMERIC;
        return PgKind::Numeric { precision, scale };
    }
    let precision = ((typmod - 4) >> 16) & 0xffff;
    let scale = (typmod - 4) & 0xffff;
    if precision == 0 || precision > 38 || scale > precision {
        // Wider than Decimal128 (or a negative scale): exact through text.
        PgKind::AsText
    } else {
        PgKind::Numeric {
            precision: precision as u8,
            scale: scale as i8,
        }
    }
}

/// One column of a Postgres table or view as fjord reads it.
#[derive(Debug, Clone)]
pub struct PgColumn {
    pub name: String,
    /// Postgres's own spelling of the type, such as `numeric(4,1)` or `uuid`.
    pub type_name: String,
    pub kind: PgKind,
    pub nullable: bool,
}

impl PgColumn {
    /// `char(n)`: blank-padded, compared without the padding, and converted to text without it.
    pub fn is_bpchar(&self) -> bool {
        self.type_name == "bpchar"
            || (self.type_name.starts_with("character")
                && !self.type_name.starts_with("character varying"))
    }

    /// Values Postgres holds that fjord reads as NULL (NaN and infinite numerics, infinite
    /// timestamps): the SQL condition that is true for them, given the column's SQL.
    pub fn read_as_null(&self, column_sql: &str) -> Option<String> {
        match &self.kind {
            PgKind::Timestamp | PgKind::TimestampTz => {
                Some(format!("{column_sql} IN ('infinity', '-infinity')"))
            }
            PgKind::Numeric { .. } if self.type_name == "numeric" => Some(format!(
                "{column_sql}::text IN ('NaN', 'Infinity', '-Infinity')"
            )),
            PgKind::Numeric { .. } => Some(format!("{column_sql} = 'NaN'")),
            _ => None,
        }
    }

    pub fn arrow_field(&self) -> Field {
        Field::new(&self.name, self.kind.data_type(), self.nullable).with_metadata(
            [(PG_TYPE_METADATA_KEY.to_string(), self.type_name.clone())]
                .into_iter()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod_keeps_precision_and_scale() {
        // numeric(4,1): typmod = ((4 << 16) | 1) + 4
        assert_eq!(
            PgKind::from_type(1700, (4 << 16 | 1) + 4, None),
            PgKind::Numeric {
                precision: 4,
                scale: 1
            }
        );
        assert_eq!(
            PgKind::from_type(1700, -1, None),
            PgKind::Numeric {
                precision: 38,
                scale: 10
            }
        );
        assert_eq!(
            PgKind::from_type(1700, (60 << 16 | 2) + 4, None),
            PgKind::AsText
        );
    }

    #[test]
    fn arrays_of_mapped_types_are_lists() {
        assert_eq!(
            PgKind::from_type(1007, -1, Some(23)),
            PgKind::Array(Box::new(PgKind::Int4))
        );
        assert_eq!(
            PgKind::from_type(1009, -1, Some(25)),
            PgKind::Array(Box::new(PgKind::Text))
        );
        assert_eq!(PgKind::from_type(1002, -1, Some(18)), PgKind::AsText);
        assert_eq!(PgKind::from_type(18, -1, None), PgKind::AsText);
        assert_eq!(PgKind::from_type(869, -1, None), PgKind::AsText);
    }
}
