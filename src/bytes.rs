//! Serde helpers for names and paths, which are bytes on Linux: written as a JSON string when
//! they are UTF-8, as an array of numbers otherwise; both forms are read back.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Raw(Vec<u8>),
}

fn ser_bytes<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(b) {
        Ok(t) => s.serialize_str(t),
        Err(_) => b.serialize(s),
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    Ok(match Repr::deserialize(d)? {
        Repr::Text(t) => t.into_bytes(),
        Repr::Raw(b) => b,
    })
}

/// `#[serde(with = "crate::bytes::os")]` for `OsString`.
pub mod os {
    use super::*;
    pub fn serialize<S: Serializer>(v: &OsStr, s: S) -> Result<S::Ok, S::Error> {
        ser_bytes(v.as_bytes(), s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OsString, D::Error> {
        de_bytes(d).map(OsString::from_vec)
    }
}

/// `#[serde(with = "crate::bytes::path")]` for `PathBuf`.
pub mod path {
    use super::*;
    pub fn serialize<S: Serializer>(v: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
        ser_bytes(v.as_os_str().as_bytes(), s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        de_bytes(d).map(|b| PathBuf::from(OsString::from_vec(b)))
    }
}

/// `#[serde(with = "crate::bytes::opt_path")]` for `Option<PathBuf>`.
pub mod opt_path {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::PathBuf;
    #[derive(Serialize, Deserialize)]
    struct W(#[serde(with = "super::path")] PathBuf);
    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|p| W(p.clone())).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// `#[serde(with = "crate::bytes::vec")]` for `Vec<u8>` (symlink targets, xattr values).
pub mod vec {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        ser_bytes(v, s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        de_bytes(d)
    }
}

/// A name/value list (xattrs) with both sides as bytes.
pub mod pairs {
    use super::*;
    #[derive(Serialize, Deserialize)]
    struct Pair(
        #[serde(with = "super::os")] OsString,
        #[serde(with = "super::vec")] Vec<u8>,
    );
    pub fn serialize<S: Serializer>(v: &[(OsString, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let list: Vec<Pair> = v.iter().map(|(n, b)| Pair(n.clone(), b.clone())).collect();
        list.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(OsString, Vec<u8>)>, D::Error> {
        let list: Vec<Pair> = Vec::deserialize(d)?;
        Ok(list.into_iter().map(|Pair(n, b)| (n, b)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "os")]
        name: OsString,
    }

    #[test]
    fn utf8_and_raw_names_round_trip() {
        for raw in [b"plain".to_vec(), vec![0xff, 0x00, b'a'], Vec::new()] {
            let t = T {
                name: OsString::from_vec(raw.clone()),
            };
            let json = serde_json::to_string(&t).unwrap();
            let back: T = serde_json::from_str(&json).unwrap();
            assert_eq!(back, t, "{json}");
        }
        let json = serde_json::to_string(&T { name: "é".into() }).unwrap();
        assert_eq!(json, r#"{"name":"é"}"#);
    }
}
