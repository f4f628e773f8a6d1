//! GGUF metadata values: the thirteen value types, arrays stored typed (one `Vec` per array, not one
//! enum per element, so a million-entry array costs what the file does).

/// A metadata value type id (GGUF `gguf_metadata_value_type`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    /// uint8
    U8 = 0,
    /// int8
    I8 = 1,
    /// uint16
    U16 = 2,
    /// int16
    I16 = 3,
    /// uint32
    U32 = 4,
    /// int32
    I32 = 5,
    /// float32
    F32 = 6,
    /// bool (one byte, 0 or 1)
    Bool = 7,
    /// string (u64 length, utf-8 bytes)
    String = 8,
    /// array (element type, u64 count, elements)
    Array = 9,
    /// uint64
    U64 = 10,
    /// int64
    I64 = 11,
    /// float64
    F64 = 12,
}

impl ValueType {
    /// The type with this id.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The smallest number of bytes one value of this type occupies in a file.
    pub fn min_bytes(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    /// Lowercase name (`u32`, `string`, ...).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: all elements share one type; arrays of arrays nest.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// Arrays of arrays: the inner arrays may differ in element type and length.
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaValue {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::Array(_) => ValueType::Array,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
        }
    }

    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is a float of either width.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The string, when the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The bool, when the value is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A short description for error messages and `inspect`: `u32 48`, `array<string; 151936>`.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::Array(a) => format!("array<{}; {}>", a.elem_type().name(), a.len()),
            MetaValue::String(s) => format!("string {s:?}"),
            other => format!("{} {}", other.value_type().name(), other.display_scalar()),
        }
    }

    fn display_scalar(&self) -> String {
        match self {
            MetaValue::U8(v) => v.to_string(),
            MetaValue::I8(v) => v.to_string(),
            MetaValue::U16(v) => v.to_string(),
            MetaValue::I16(v) => v.to_string(),
            MetaValue::U32(v) => v.to_string(),
            MetaValue::I32(v) => v.to_string(),
            MetaValue::F32(v) => float_text(*v),
            MetaValue::Bool(v) => v.to_string(),
            MetaValue::String(s) => format!("{s:?}"),
            MetaValue::Array(a) => a.display(8),
            MetaValue::U64(v) => v.to_string(),
            MetaValue::I64(v) => v.to_string(),
            MetaValue::F64(v) => float_text(*v),
        }
    }

    /// The value as JSON (floats that JSON cannot hold become strings like `"NaN"`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            MetaValue::U8(v) => J::from(*v),
            MetaValue::I8(v) => J::from(*v),
            MetaValue::U16(v) => J::from(*v),
            MetaValue::I16(v) => J::from(*v),
            MetaValue::U32(v) => J::from(*v),
            MetaValue::I32(v) => J::from(*v),
            MetaValue::F32(v) => float_json(f64::from(*v)),
            MetaValue::Bool(v) => J::from(*v),
            MetaValue::String(s) => J::from(s.as_str()),
            MetaValue::Array(a) => a.to_json(),
            MetaValue::U64(v) => J::from(*v),
            MetaValue::I64(v) => J::from(*v),
            MetaValue::F64(v) => float_json(*v),
        }
    }
}

/// Plain digits for ordinary magnitudes (`3.14159`), Rust's shortest exponent form for the rest
/// (`1e-6`, `8.095e-320`).
fn float_text<T: std::fmt::Display + std::fmt::LowerExp + Into<f64> + Copy>(v: T) -> String {
    let a = v.into().abs();
    if a == 0.0 || !a.is_finite() || (1e-4..1e7).contains(&a) {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

fn float_json(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(v.to_string()))
}

impl MetaArray {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            MetaArray::U8(_) => ValueType::U8,
            MetaArray::I8(_) => ValueType::I8,
            MetaArray::U16(_) => ValueType::U16,
            MetaArray::I16(_) => ValueType::I16,
            MetaArray::U32(_) => ValueType::U32,
            MetaArray::I32(_) => ValueType::I32,
            MetaArray::F32(_) => ValueType::F32,
            MetaArray::Bool(_) => ValueType::Bool,
            MetaArray::String(_) => ValueType::String,
            MetaArray::Array(_) => ValueType::Array,
            MetaArray::U64(_) => ValueType::U64,
            MetaArray::I64(_) => ValueType::I64,
            MetaArray::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `max` elements as text, `[1, 2, 3, …]`, floats in their own precision.
    pub fn display(&self, max: usize) -> String {
        fn items<T>(v: &[T], max: usize, f: impl Fn(&T) -> String) -> String {
            let mut parts: Vec<String> = v.iter().take(max).map(f).collect();
            if v.len() > max {
                parts.push("…".into());
            }
            format!("[{}]", parts.join(", "))
        }
        match self {
            MetaArray::U8(v) => items(v, max, |x| x.to_string()),
            MetaArray::I8(v) => items(v, max, |x| x.to_string()),
            MetaArray::U16(v) => items(v, max, |x| x.to_string()),
            MetaArray::I16(v) => items(v, max, |x| x.to_string()),
            MetaArray::U32(v) => items(v, max, |x| x.to_string()),
            MetaArray::I32(v) => items(v, max, |x| x.to_string()),
            MetaArray::F32(v) => items(v, max, |x| float_text(*x)),
            MetaArray::Bool(v) => items(v, max, |x| x.to_string()),
            MetaArray::String(v) => items(v, max, |x| format!("{x:?}")),
            MetaArray::Array(v) => items(v, max, |x| x.display(max)),
            MetaArray::U64(v) => items(v, max, |x| x.to_string()),
            MetaArray::I64(v) => items(v, max, |x| x.to_string()),
            MetaArray::F64(v) => items(v, max, |x| float_text(*x)),
        }
    }

    /// The array as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        fn map<T: Clone>(v: &[T], f: impl Fn(T) -> MetaValue) -> serde_json::Value {
            serde_json::Value::Array(v.iter().map(|x| f(x.clone()).to_json()).collect())
        }
        match self {
            MetaArray::U8(v) => map(v, MetaValue::U8),
            MetaArray::I8(v) => map(v, MetaValue::I8),
            MetaArray::U16(v) => map(v, MetaValue::U16),
            MetaArray::I16(v) => map(v, MetaValue::I16),
            MetaArray::U32(v) => map(v, MetaValue::U32),
            MetaArray::I32(v) => map(v, MetaValue::I32),
            MetaArray::F32(v) => map(v, MetaValue::F32),
            MetaArray::Bool(v) => map(v, MetaValue::Bool),
            MetaArray::String(v) => map(v, MetaValue::String),
            MetaArray::Array(v) => {
                serde_json::Value::Array(v.iter().map(|a| a.to_json()).collect())
            }
            MetaArray::U64(v) => map(v, MetaValue::U64),
            MetaArray::I64(v) => map(v, MetaValue::I64),
            MetaArray::F64(v) => map(v, MetaValue::F64),
        }
    }
}
