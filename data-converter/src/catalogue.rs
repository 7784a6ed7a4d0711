//! The 特定健診 item catalogue (domain.md §1.5–§1.7, MHLW 付属2), shipped as data in
//! `data/items.toml`: type, unit, UCUM unit, input range, result table, analyte and FHIR category of
//! every item code the converter accepts.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::normalize::unit_key;

/// Value type of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ValueType {
    /// Physical quantity.
    #[serde(rename = "PQ")]
    Pq,
    /// Coded (CD or CO in the CDA).
    #[serde(rename = "CD")]
    Cd,
    /// Text.
    #[serde(rename = "ST")]
    St,
}

impl ValueType {
    /// The CDA name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Pq => "PQ",
            ValueType::Cd => "CD",
            ValueType::St => "ST",
        }
    }
}

/// JP Core observation category of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Lab result (JP_Observation_LabResult).
    Laboratory,
    /// Vital signs (JP_Observation_VitalSigns).
    VitalSigns,
    /// Body measurement (JP_Observation_BodyMeasurement).
    BodyMeasurement,
    /// Examination finding or judgement (JP_Observation_Common).
    Exam,
    /// Questionnaire answer (JP_Observation_Common).
    Survey,
}

/// Specimen material of a lab item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Material {
    /// Serum.
    BloodSerum,
    /// Whole blood.
    Blood,
    /// Urine.
    Urine,
}

/// One item of the catalogue.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// 17-character item code.
    pub code: String,
    /// Japanese name.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Unit as written in 付属2 (PQ).
    #[serde(default)]
    pub unit: Option<String>,
    /// UCUM unit (PQ).
    #[serde(default)]
    pub ucum: Option<String>,
    /// Input range (PQ).
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// Where the input range comes from when not confirmed.
    #[serde(default)]
    pub range_source: Option<String>,
    /// Result table OID (CD).
    #[serde(default)]
    pub values: Option<String>,
    /// Method-independent concept.
    pub analyte: String,
    /// JP Core category.
    pub category: Category,
    /// Specimen material (lab items).
    #[serde(default)]
    pub material: Option<Material>,
    /// The item code is a JLAC10 code.
    #[serde(default)]
    pub jlac10: bool,
    /// `urn:oid:` + `values` (the result table as a code system URI), computed at load.
    #[serde(skip)]
    values_system: Option<String>,
    /// [`unit_key`] of `unit` and `ucum`, computed once when the catalogue is loaded.
    #[serde(skip)]
    unit_keys: [Option<String>; 2],
}

impl Item {
    /// The result table as a code system URI (`urn:oid:…`), if the item is coded.
    pub fn values_system(&self) -> Option<&str> {
        self.values_system.as_deref()
    }

    /// Whether `unit` (as found in a CDA or CSV) denotes this item's unit.
    pub fn unit_matches(&self, unit: &str) -> bool {
        if self.unit.as_deref() == Some(unit) || self.ucum.as_deref() == Some(unit) {
            return true;
        }
        if self.unit_keys.iter().all(Option::is_none)
            && (self.unit.is_some() || self.ucum.is_some())
        {
            // Not loaded through `Catalogue::from_toml`: compute the keys here.
            let k = unit_key(unit);
            return self.unit.as_deref().is_some_and(|u| unit_key(u) == k)
                || self.ucum.as_deref().is_some_and(|u| unit_key(u) == k)
                || (k == "u/l" && self.unit.as_deref() == Some("U/l"));
        }
        let [ku, kc] = &self.unit_keys;
        ku.as_deref().is_some_and(|k| unit_key_is(unit, k))
            || kc.as_deref().is_some_and(|k| unit_key_is(unit, k))
            || (unit_key_is(unit, "u/l") && self.unit.as_deref() == Some("U/l"))
    }
}

/// Whether [`unit_key`]`(unit) == key`, without allocating for ASCII units.
fn unit_key_is(unit: &str, key: &str) -> bool {
    if !unit.is_ascii() {
        return unit_key(unit) == key;
    }
    let mut k = key.bytes();
    for b in unit.bytes() {
        if matches!(b, b'[' | b']' | b' ' | b'{' | b'}' | b'_') {
            continue;
        }
        if k.next() != Some(b.to_ascii_lowercase()) {
            return false;
        }
    }
    k.next().is_none()
}

/// A 一連検査グループ recognised by one of its member codes.
#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    /// Id used as code in `urn:iphr:tokutei-group`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Member item codes that identify the group.
    pub identified_by: Vec<String>,
}

/// Word-at-a-time hash (FxHash) for the catalogue's fixed tables: keys are short codes, looked
/// up once or twice per observation; SipHash's flooding resistance is not needed for tables
/// that are built from shipped data only.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<V> = HashMap<String, V, BuildHasherDefault<FxHasher>>;

#[derive(Deserialize)]
struct File {
    values: FxMap<FxMap<String>>,
    item: Vec<Item>,
    group: Vec<Group>,
}

/// The item catalogue.
#[derive(Debug)]
pub struct Catalogue {
    items: FxMap<Item>,
    values: FxMap<FxMap<String>>,
    groups: Vec<Group>,
}

impl Catalogue {
    /// The catalogue shipped in `data/items.toml`.
    pub fn builtin() -> &'static Catalogue {
        static CAT: OnceLock<Catalogue> = OnceLock::new();
        CAT.get_or_init(|| {
            // Invariant: the shipped file is checked by the unit test `builtin_catalogue_loads`.
            Catalogue::from_toml(include_str!("../data/items.toml"))
                .unwrap_or_else(|e| panic!("data/items.toml is invalid: {e}"))
        })
    }

    /// Parses a catalogue from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut items = FxMap::default();
        for mut it in f.item {
            it.values_system = it.values.as_deref().map(|v| format!("urn:oid:{v}"));
            it.unit_keys = [
                it.unit.as_deref().map(unit_key),
                it.ucum.as_deref().map(unit_key),
            ];
            if it.value_type == ValueType::Pq && (it.unit.is_none() || it.ucum.is_none()) {
                return Err(format!("PQ item {} lacks unit/ucum", it.code));
            }
            if let Some(v) = &it.values
                && !f.values.contains_key(v)
            {
                return Err(format!("item {} names unknown result table {v}", it.code));
            }
            if items.insert(it.code.clone(), it).is_some() {
                return Err("duplicate item code".into());
            }
        }
        Ok(Self {
            items,
            values: f.values,
            groups: f.group,
        })
    }

    /// Looks up an item.
    pub fn item(&self, code: &str) -> Option<&Item> {
        self.items.get(code)
    }

    /// The code as stored in the result table and its display text (both borrowed from the
    /// catalogue); `None` if the table or code is unknown.
    pub fn value_entry(&self, table: &str, code: &str) -> Option<(&str, &str)> {
        self.values
            .get(table)?
            .get_key_value(code)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Display text of a code in a result table; `None` if the table or code is unknown.
    pub fn value_display(&self, table: &str, code: &str) -> Option<&str> {
        self.values.get(table)?.get(code).map(String::as_str)
    }

    /// The group a member code identifies.
    pub fn group_of(&self, member: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.identified_by.iter().any(|c| c == member))
    }

    /// All items (unordered).
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_loads() {
        let c = Catalogue::builtin();
        let w = c.item("9N006000000000001").unwrap();
        assert_eq!(w.range, Some([20.0, 250.0]));
        assert!(c.item("3D046000001906202").unwrap().jlac10);
        assert_eq!(c.value_display("1.2.392.200119.6.2102", "2"), Some("±"));
        assert_eq!(
            c.group_of("8A065000002391901").unwrap().id,
            "serum-creatinine"
        );
        // every item code parses as an ItemCode, every lab code as JLAC10
        for it in c.items() {
            assert!(
                it.code.parse::<crate::iphr::ItemCode>().is_ok(),
                "{}",
                it.code
            );
            if it.jlac10 {
                assert!(
                    it.code.parse::<crate::iphr::Jlac10>().is_ok(),
                    "{}",
                    it.code
                );
                assert!(it.material.is_some(), "{}", it.code);
            }
        }
    }

    #[test]
    fn units_match_across_spellings() {
        let c = Catalogue::builtin();
        let sbp = c.item("9A751000000000001").unwrap();
        assert!(
            sbp.unit_matches("mmHg") && sbp.unit_matches("mm[Hg]") && sbp.unit_matches("ｍｍＨｇ")
        );
        assert!(!sbp.unit_matches("kPa"));
        let tg = c.item("3F015000002327101").unwrap();
        assert!(tg.unit_matches("mg/dL") && !tg.unit_matches("mmol/L"));
    }
}
