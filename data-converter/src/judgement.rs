//! Derived judgements (issue 4, Deliver 4; domain.md §1.8 判定値, §1.9 階層化, §7.1 判定区分), from the
//! tables shipped as data in `data/judgement.toml`:
//! per-item 保健指導判定値 / 受診勧奨判定値 flags, per-item 判定区分 A–E, メタボリックシンドローム判定 and
//! 階層化 (特定保健指導 level) as derived entries.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::catalogue::Catalogue;
use crate::iphr::{
    Bound, Code, Entry, EntryKind, Flag, Grade, Interpretation, Record, Sex, Value, systems,
};

/// Comparison of a measured value with a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    /// value ≥ limit.
    #[serde(rename = ">=")]
    Ge,
    /// value > limit.
    #[serde(rename = ">")]
    Gt,
    /// value ≤ limit.
    #[serde(rename = "<=")]
    Le,
    /// value < limit.
    #[serde(rename = "<")]
    Lt,
}

/// One level (保健指導 or 受診勧奨) of a threshold.
#[derive(Debug, Clone, Deserialize)]
pub struct Level {
    /// Comparison (quantities).
    #[serde(default)]
    pub op: Option<Op>,
    /// Limit for both sexes.
    #[serde(default)]
    pub value: Option<f64>,
    /// Limit for men.
    #[serde(default)]
    pub male: Option<f64>,
    /// Limit for women.
    #[serde(default)]
    pub female: Option<f64>,
    /// Codes reaching the level (coded items).
    #[serde(default)]
    pub codes: Vec<String>,
}

impl Level {
    /// Whether `e` (whose quantity, parsed once by the caller, is `quantity`) reaches the level.
    fn reached(&self, e: &Entry, quantity: Option<f64>, sex: Option<Sex>) -> bool {
        if let Some(c) = e.coded() {
            return self.codes.iter().any(|x| x == c);
        }
        let Some(op) = self.op else { return false };
        let limit = match sex {
            Some(Sex::Male) => self.male.or(self.value),
            Some(Sex::Female) => self.female.or(self.value),
            None => self.value,
        };
        let Some(limit) = limit else { return false };
        match (quantity, e.out_of_range) {
            (Some(x), _) => match op {
                Op::Ge => x >= limit,
                Op::Gt => x > limit,
                Op::Le => x <= limit,
                Op::Lt => x < limit,
            },
            // 入力範囲外 without the measured value (before 2013-04): beyond every limit on that side.
            (None, Some(Bound::Above)) => matches!(op, Op::Ge | Op::Gt),
            (None, Some(Bound::Below)) => matches!(op, Op::Le | Op::Lt),
            (None, None) => false,
        }
    }
}

/// Threshold of one analyte.
#[derive(Debug, Clone, Deserialize)]
pub struct Threshold {
    /// Analyte (see `data/items.toml`).
    pub analyte: String,
    /// 保健指導判定値.
    #[serde(default)]
    pub guidance: Option<Level>,
    /// 受診勧奨判定値.
    #[serde(default)]
    pub referral: Option<Level>,
}

/// 判定区分 table.
#[derive(Debug, Clone, Deserialize)]
pub struct Grades {
    /// No finding.
    pub normal: Grade,
    /// Source says abnormal, below the guidance level.
    pub abnormal: Grade,
    /// 保健指導判定値 reached.
    pub guidance: Grade,
    /// 受診勧奨判定値 reached.
    pub referral: Grade,
    /// Under treatment (服薬 はい).
    pub treated: Grade,
    /// Analyte → 服薬 analyte.
    #[serde(default)]
    pub treated_by: HashMap<String, String>,
}

/// Limits of メタボ判定 and 階層化.
#[derive(Debug, Clone, Deserialize)]
pub struct RiskLimits {
    /// 腹囲, men (cm).
    pub waist_male: f64,
    /// 腹囲, women (cm).
    pub waist_female: f64,
    /// 内臓脂肪面積 (cm²), 階層化 only.
    #[serde(default)]
    pub visceral_fat: Option<f64>,
    /// BMI, 階層化 only.
    #[serde(default)]
    pub bmi: Option<f64>,
    /// 空腹時血糖.
    pub glucose_fasting: f64,
    /// HbA1c.
    pub hba1c: f64,
    /// 随時血糖.
    pub glucose_casual: f64,
    /// 空腹時中性脂肪.
    pub tg_fasting: f64,
    /// 随時中性脂肪.
    pub tg_casual: f64,
    /// HDL below this.
    pub hdl_below: f64,
    /// 収縮期血圧.
    pub sbp: f64,
    /// 拡張期血圧.
    pub dbp: f64,
    /// 積極的支援 → 動機付け支援 from this age.
    #[serde(default)]
    pub downgrade_age_from: Option<u32>,
    /// … to this age (inclusive).
    #[serde(default)]
    pub downgrade_age_to: Option<u32>,
}

/// All judgement tables.
#[derive(Debug, Clone, Deserialize)]
pub struct Tables {
    /// Name recorded in provenance.
    pub name: String,
    /// Per-analyte thresholds.
    pub threshold: Vec<Threshold>,
    /// 判定区分.
    pub grades: Grades,
    /// メタボ判定.
    pub metabolic: RiskLimits,
    /// 階層化.
    pub stratification: RiskLimits,
}

impl Tables {
    /// The tables shipped in `data/judgement.toml`.
    pub fn builtin() -> &'static Tables {
        static T: OnceLock<Tables> = OnceLock::new();
        T.get_or_init(|| {
            // Invariant: the shipped file is checked by the unit test `builtin_tables_load`.
            Tables::from_toml(include_str!("../data/judgement.toml"))
                .unwrap_or_else(|e| panic!("data/judgement.toml is invalid: {e}"))
        })
    }

    /// Parses tables from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Applies the built-in tables to a record (flags, grades, derived entries).
pub fn apply(record: &mut Record) {
    apply_with(record, Tables::builtin());
}

/// Applies `tables` to a record. Idempotent: earlier flags, grades and derived entries are replaced.
pub fn apply_with(record: &mut Record, tables: &Tables) {
    if record.entries.iter().any(|e| e.kind == EntryKind::Derived) {
        record.entries.retain(|e| e.kind != EntryKind::Derived);
    }
    let sex = record.person.sex;
    // 服薬 analytes answered "はい" (code 1).
    let on_meds: smallvec::SmallVec<[std::borrow::Cow<'static, str>; 4]> = record
        .entries
        .iter()
        .filter(|e| e.coded() == Some("1"))
        .filter_map(|e| e.analyte.clone())
        .collect();
    let treated = |analyte: &str| -> bool {
        tables
            .grades
            .treated_by
            .iter()
            .find(|(a, _)| a.as_str() == analyte)
            .is_some_and(|(_, med)| on_meds.iter().any(|m| m == med))
    };
    for e in &mut record.entries {
        e.flags.clear();
        e.grade = None;
        if e.kind != EntryKind::Observation || e.absent.is_some() {
            continue;
        }
        let Some(analyte) = e.analyte.as_deref() else {
            continue;
        };
        let Some(t) = tables.threshold.iter().find(|t| t.analyte == analyte) else {
            continue;
        };
        let q = e.quantity();
        let g = t.guidance.as_ref().is_some_and(|l| l.reached(e, q, sex));
        let r = t.referral.as_ref().is_some_and(|l| l.reached(e, q, sex));
        if g {
            e.flags.push(Flag::GuidanceLevel);
        }
        if r {
            e.flags.push(Flag::ReferralLevel);
        }
        let abnormal = matches!(
            e.interpretation,
            Some(Interpretation::H | Interpretation::L | Interpretation::A)
        ) || e.out_of_range.is_some();
        e.grade = Some(if treated(analyte) {
            tables.grades.treated
        } else if r {
            tables.grades.referral
        } else if g {
            tables.grades.guidance
        } else if abnormal {
            tables.grades.abnormal
        } else {
            tables.grades.normal
        });
    }
    let facts = Facts::of(record);
    let next = record.entries.len();
    let metabolic = metabolic(&facts, &tables.metabolic);
    let level = stratify(&facts, &tables.stratification);
    let cat = Catalogue::builtin();
    for (i, (name, table, system, code)) in [
        (
            "metabolic-syndrome",
            "1.2.392.200119.6.1008",
            systems::METABOLIC,
            metabolic,
        ),
        (
            "guidance-level",
            "1.2.392.200119.6.3001",
            systems::GUIDANCE_LEVEL,
            level,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let display = cat.value_display(table, code).unwrap_or("");
        let mut e = Entry::observation(
            compact_str::format_compact!("e{}", next + i + 1),
            Code::with_display(
                systems::IPHR_DERIVED,
                name,
                match name {
                    "metabolic-syndrome" => "メタボリックシンドローム判定(導出)",
                    _ => "保健指導レベル(導出)",
                },
            ),
            "derived",
        );
        e.kind = EntryKind::Derived;
        e.analyte = Some(name.into());
        e.value = Some(Value::Coded {
            code: Code::with_display(system, code, display),
        });
        record.entries.push(e);
    }
    if !record.provenance.tables.iter().any(|t| t == &tables.name) {
        record.provenance.tables.push(tables.name.clone());
    }
}

/// Values the risk rules need, taken from the record (means over repeated readings).
struct Facts {
    sex: Option<Sex>,
    age: Option<u32>,
    waist: Option<f64>,
    visceral: Option<f64>,
    bmi: Option<f64>,
    glucose_fasting: Option<f64>,
    glucose_casual: Option<f64>,
    hba1c: Option<f64>,
    tg_fasting: Option<f64>,
    tg_casual: Option<f64>,
    hdl: Option<f64>,
    sbp: Option<f64>,
    dbp: Option<f64>,
    med_bp: bool,
    med_glucose: bool,
    med_lipid: bool,
    smoker: bool,
}

/// Index in [`Facts::of`]'s sums of a quantity analyte the risk rules use (a `match`: no scan).
fn quantity_index(analyte: &str) -> Option<usize> {
    Some(match analyte {
        "waist" => 0,
        "visceral-fat-area" => 1,
        "bmi" => 2,
        "glucose-fasting" => 3,
        "glucose-casual" => 4,
        "hba1c" => 5,
        "tg-fasting" => 6,
        "tg-casual" => 7,
        "hdl" => 8,
        "sbp" => 9,
        "dbp" => 10,
        _ => return None,
    })
}

/// Index of a 服薬/喫煙 analyte (answered はい = code 1).
fn yes_index(analyte: &str) -> Option<usize> {
    Some(match analyte {
        "medication-bp" => 0,
        "medication-glucose" => 1,
        "medication-lipid" => 2,
        "smoking" => 3,
        _ => return None,
    })
}

impl Facts {
    fn of(r: &Record) -> Self {
        // One pass over the entries: sums and counts of the quantities (means over repeated
        // readings, summed in source order), and whether a 服薬/喫煙 answer is "1" (はい).
        let mut sums = [(0.0f64, 0u32); 11];
        let mut yes = [false; 4];
        for e in &r.entries {
            let Some(a) = e.analyte.as_deref() else {
                continue;
            };
            if let Some(i) = quantity_index(a) {
                if e.kind == EntryKind::Observation
                    && let Some(x) = e.quantity()
                {
                    sums[i].0 += x;
                    sums[i].1 += 1;
                }
            } else if let Some(i) = yes_index(a)
                && e.coded() == Some("1")
            {
                yes[i] = true;
            }
        }
        let mean = |i: usize| {
            let (sum, n) = sums[i];
            if n == 0 {
                None
            } else {
                Some(sum / f64::from(n))
            }
        };
        Facts {
            sex: r.person.sex,
            age: r
                .person
                .birth_date
                .map(|b| r.effective.start().years_since(b)),
            waist: mean(0),
            visceral: mean(1),
            bmi: mean(2),
            glucose_fasting: mean(3),
            glucose_casual: mean(4),
            hba1c: mean(5),
            tg_fasting: mean(6),
            tg_casual: mean(7),
            hdl: mean(8),
            sbp: mean(9),
            dbp: mean(10),
            med_bp: yes[0],
            med_glucose: yes[1],
            med_lipid: yes[2],
            smoker: yes[3],
        }
    }

    /// (glucose, lipid, blood pressure) risks; `None` where the data do not allow a decision.
    fn risks(&self, l: &RiskLimits, meds_count: bool) -> [Option<bool>; 3] {
        let ge = |v: Option<f64>, t: f64| v.map(|x| x >= t);
        let any = |xs: &[Option<bool>]| -> Option<bool> {
            if xs.contains(&Some(true)) {
                Some(true)
            } else if xs.iter().all(Option::is_none) {
                None
            } else {
                Some(false)
            }
        };
        let glucose = if self.glucose_fasting.is_some() || self.hba1c.is_some() {
            any(&[
                ge(self.glucose_fasting, l.glucose_fasting),
                ge(self.hba1c, l.hba1c),
            ])
        } else {
            ge(self.glucose_casual, l.glucose_casual)
        };
        let tg = if self.tg_fasting.is_some() {
            ge(self.tg_fasting, l.tg_fasting)
        } else {
            ge(self.tg_casual, l.tg_casual)
        };
        let lipid = any(&[tg, self.hdl.map(|x| x < l.hdl_below)]);
        let bp = any(&[ge(self.sbp, l.sbp), ge(self.dbp, l.dbp)]);
        let with_med = |r: Option<bool>, med: bool| if meds_count && med { Some(true) } else { r };
        [
            with_med(glucose, self.med_glucose),
            with_med(lipid, self.med_lipid),
            with_med(bp, self.med_bp),
        ]
    }

    fn waist_reached(&self, l: &RiskLimits) -> Option<bool> {
        let limit = match self.sex? {
            Sex::Male => l.waist_male,
            Sex::Female => l.waist_female,
        };
        self.waist.map(|w| w >= limit)
    }
}

/// メタボリックシンドローム判定 code (1 基準該当, 2 予備群該当, 3 非該当, 4 判定不能).
fn metabolic(f: &Facts, l: &RiskLimits) -> &'static str {
    match f.waist_reached(l) {
        None => "4",
        Some(false) => "3",
        Some(true) => {
            let risks = f.risks(l, true);
            let n = risks.iter().filter(|r| **r == Some(true)).count();
            if n >= 2 {
                "1"
            } else if risks.iter().any(Option::is_none) {
                "4"
            } else if n == 1 {
                "2"
            } else {
                "3"
            }
        }
    }
}

/// 階層化 code (1 積極的支援, 2 動機付け支援, 3 なし(情報提供), 4 判定不能), domain.md §1.9.
fn stratify(f: &Facts, l: &RiskLimits) -> &'static str {
    // STEP 4 first: anyone on medication for bp/glucose/lipids is excluded (情報提供).
    if f.med_bp || f.med_glucose || f.med_lipid {
        return "3";
    }
    // STEP 1.
    let waist = f.waist_reached(l);
    let visceral = f.visceral.zip(l.visceral_fat).map(|(v, t)| v >= t);
    let group1 = waist == Some(true) || visceral == Some(true);
    let group = if group1 {
        1
    } else {
        match (waist, f.bmi.zip(l.bmi).map(|(b, t)| b >= t)) {
            (_, Some(true)) => 2,
            (Some(false), Some(false)) => return "3",
            _ => return "4",
        }
    };
    // STEP 2.
    let risks = f.risks(l, false);
    if risks.iter().any(Option::is_none) {
        return "4";
    }
    let mut n = risks.iter().filter(|r| **r == Some(true)).count();
    if f.smoker && n >= 1 {
        n += 1;
    }
    // STEP 3.
    let mut level = match (group, n) {
        (_, 0) => 3,
        (1, 1) => 2,
        (1, _) => 1,
        (_, 1 | 2) => 2,
        _ => 1,
    };
    // STEP 4: 65–74 years: 積極的 → 動機付け.
    if level == 1
        && let (Some(age), Some(from), Some(to)) = (f.age, l.downgrade_age_from, l.downgrade_age_to)
        && (from..=to).contains(&age)
    {
        level = 2;
    }
    match level {
        1 => "1",
        2 => "2",
        _ => "3",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            sex: Some(Sex::Male),
            age: Some(50),
            waist: Some(80.0),
            visceral: None,
            bmi: Some(22.0),
            glucose_fasting: Some(90.0),
            glucose_casual: None,
            hba1c: Some(5.2),
            tg_fasting: Some(100.0),
            tg_casual: None,
            hdl: Some(60.0),
            sbp: Some(120.0),
            dbp: Some(70.0),
            med_bp: false,
            med_glucose: false,
            med_lipid: false,
            smoker: false,
        }
    }

    #[test]
    fn builtin_tables_load() {
        let t = Tables::builtin();
        assert!(t.threshold.iter().any(|x| x.analyte == "hba1c"));
        assert_eq!(t.grades.treated, Grade::E);
    }

    #[test]
    fn stratification_follows_the_four_steps() {
        let l = &Tables::builtin().stratification;
        let mut f = facts();
        assert_eq!(stratify(&f, l), "3", "slim, no risk");
        f.waist = Some(90.0);
        assert_eq!(stratify(&f, l), "3", "waist but no risk → 情報提供");
        f.sbp = Some(135.0);
        assert_eq!(stratify(&f, l), "2", "waist + 1 risk → 動機付け");
        f.smoker = true;
        assert_eq!(stratify(&f, l), "1", "waist + 1 risk + smoker → 積極的");
        f.age = Some(66);
        assert_eq!(stratify(&f, l), "2", "65–74 downgraded");
        f.med_bp = true;
        assert_eq!(stratify(&f, l), "3", "on medication → excluded");
        let mut g = facts();
        g.bmi = Some(26.0);
        g.sbp = Some(135.0);
        g.hba1c = Some(5.8);
        assert_eq!(stratify(&g, l), "2", "BMI group, 2 risks");
        g.hdl = Some(35.0);
        assert_eq!(stratify(&g, l), "1", "BMI group, 3 risks");
        g.hdl = None;
        g.tg_fasting = None;
        assert_eq!(stratify(&g, l), "4", "lipid data missing → 判定不能");
    }

    #[test]
    fn metabolic_syndrome_codes() {
        let l = &Tables::builtin().metabolic;
        let mut f = facts();
        assert_eq!(metabolic(&f, l), "3");
        f.waist = Some(86.0);
        assert_eq!(metabolic(&f, l), "3");
        f.sbp = Some(131.0);
        assert_eq!(metabolic(&f, l), "2");
        f.med_lipid = true;
        assert_eq!(metabolic(&f, l), "1");
        f.sex = None;
        assert_eq!(metabolic(&f, l), "4");
    }
}
