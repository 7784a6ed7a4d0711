//! 標準化リワークプログラム評価シート (12 items; domain.md §7.6; seed 004: 厚生労働科学研究 分担研究報告書
//! 「標準化リワーク評価シートの作成」, 秋山 剛 et al.). Each item is judged on 4 levels, **1 = least
//! favourable, 4 = most favourable**; the anchors below are the sheet's (完成案), shortened only where
//! the sheet repeats itself. The research-only 全体的な判断 item is not part of the sheet.

/// One item of the sheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Item number 1–12.
    pub number: u8,
    /// Key in the JSON (`scores.<key>`), also the code in [`SYSTEM`].
    pub key: &'static str,
    /// Section (I 基本項目, II 対人交流, III 心理的側面).
    pub section: &'static str,
    /// Item name on the sheet.
    pub name: &'static str,
    /// Anchors for scores 1, 2, 3, 4.
    pub anchors: [&'static str; 4],
}

/// Code system of the items.
pub const SYSTEM: &str = "urn:iphr:rework-sheet";

/// The 12 items in sheet order.
pub const ITEMS: [Item; 12] = [
    Item {
        number: 1,
        key: "attendance",
        section: "I 基本項目",
        name: "出席率",
        anchors: ["80%未満", "80%以上、90%未満", "90%以上、95%未満", "95%以上"],
    },
    Item {
        number: 2,
        key: "sleepiness_fatigue",
        section: "I 基本項目",
        name: "眠気・疲労",
        anchors: [
            "眠気・疲労によるプログラム参加への影響が、平均週に1回以上みられる",
            "眠気・疲労によるプログラム参加への影響が、平均週に1回未満みられる",
            "まれに眠気・疲労が観察されるが、プログラム参加への影響はみられない",
            "眠気・疲労はまったく観察されない",
        ],
    },
    Item {
        number: 3,
        key: "concentration",
        section: "I 基本項目",
        name: "集中の持続",
        anchors: [
            "集中力低下や途切れによるプログラム参加への影響が、平均週に1回以上みられる",
            "集中力低下や途切れによるプログラム参加への影響が、平均週に1回未満みられる",
            "まれに集中力低下や途切れが観察されるが、プログラム参加への影響はみられない",
            "集中力低下や途切れは、まったく観察されない",
        ],
    },
    Item {
        number: 4,
        key: "conversation",
        section: "II 対人交流",
        name: "他のメンバーやスタッフとの会話",
        anchors: [
            "スタッフや他のメンバーに話しかけられても返事さえしないことがある",
            "スタッフや他のメンバーに話しかけられれば返事をするが、自ら話しかけることは少ない",
            "スタッフや他のメンバーに自ら話しかけるが、相手は特定の人に限定される",
            "スタッフや他のメンバーの誰に対しても、話しかけ、会話をもつことができる",
        ],
    },
    Item {
        number: 5,
        key: "cooperation",
        section: "II 対人交流",
        name: "協調性",
        anchors: [
            "スタッフが助言や指導を行っても、協調性をもって活動にとりくめない",
            "自発的には協調性をもって活動にとりくめない。スタッフが助言や指導を行えば、協調性をもって活動にとりくめる",
            "自発的に協調性がある活動を示すが、ときに、協調性がとれないことがある",
            "自発的に、常に協調性がある活動ができる",
        ],
    },
    Item {
        number: 6,
        key: "assertiveness",
        section: "II 対人交流",
        name: "適切な自己主張",
        anchors: [
            "断ることさえできない",
            "断れるが、自分の考えや気持ちを表現できない",
            "自発的に自分の考えや気持ちを表現できるが、相手との関係性を損なう場合がある",
            "自発的に自分の考えや気持ちを表現でき、相手との関係性を損なうことはない",
        ],
    },
    Item {
        number: 7,
        key: "unpleasant_behaviour",
        section: "II 対人交流",
        name: "不快な行為",
        anchors: [
            "自分が不快な行為を受けたわけでもないのに、自ら相手に不快な行為を起こし、助言や指導を行っても、不快な行為が止まらない",
            "自分が不快な行為を受けたわけでもないのに、相手に不快な行為を起こすが、助言や指導を行えば、不快な行為を止められる",
            "自分が不快な行為を受けることがなければ、相手に不快な行為をとらない",
            "自分が不快な行為を受けても、相手には不快な行為をとらない",
        ],
    },
    Item {
        number: 8,
        key: "role_behaviour",
        section: "II 対人交流",
        name: "役割行動",
        anchors: [
            "指摘、助言や指導を行っても、自分の役割を認識できず、それに応じた行動もとれない",
            "指摘、助言や指導を行えば、自分の役割を認識できるが、それに応じた行動はとれない",
            "指摘、助言や指導を行えば、自分の役割を認識でき、それに応じた行動がとれる",
            "自発的に自分の役割を認識でき、それに応じた行動がとれる",
        ],
    },
    Item {
        number: 9,
        key: "coping",
        section: "II 対人交流",
        name: "対処行動",
        anchors: [
            "自己努力を行えない",
            "自己努力は行うが、助言や指導を求める行動がとれず、問題状況に対する対処に十分でない点がある",
            "自己努力および助言や指導を求める行動の両方を行なえるが、ときに問題状況に対処できないことがある(または、助言や指導を求められないが自己努力で十分に対処できる)",
            "自己努力および助言や指導を求める行動の両方を行ない、常に、問題状況に対して対処を行える",
        ],
    },
    Item {
        number: 10,
        key: "emotional_stability",
        section: "III 心理的側面",
        name: "気持ちの安定",
        anchors: [
            "気持ちは安定せず、離席、退出、作業の滞りが、平均4週間に1回以上みられる",
            "気持ちは安定せず、離席、退出、作業の滞りが、平均4週間に1回未満みられる",
            "気持ちは安定しないことがあるが、作業への影響はみられない",
            "気持ちは常に安定している",
        ],
    },
    Item {
        number: 11,
        key: "initiative",
        section: "III 心理的側面",
        name: "積極性・意欲",
        anchors: [
            "現在の課題や目標に取り組めない",
            "現在の課題や目標に取り組むが、助言や指導があっても、新しい他の課題や目標に取り組むことに消極的である",
            "現在の課題や目標に取り組み、助言や指導があれば、新しい他の課題や目標に取り組もうとする",
            "現在の課題や目標に取り組み、自発的に、新しい他の課題や目標に関心を示す",
        ],
    },
    Item {
        number: 12,
        key: "response_to_feedback",
        section: "III 心理的側面",
        name: "他のメンバーやスタッフからの注意や指摘への反応",
        anchors: [
            "注意や指摘を理解しようとする態度を示すことさえもできない",
            "注意や指摘を理解しようとする態度を示すことはできるが、自ら内省することはできない",
            "注意や指摘を理解しようとする態度を示し、自ら内省するが、行動変容することまではできない",
            "注意や指摘を理解し、行動変容もできる",
        ],
    },
];

/// The anchor of `score` (1–4) for item `number` (1–12).
pub fn anchor(number: u8, score: u8) -> Option<&'static str> {
    let item = ITEMS.get(usize::from(number).checked_sub(1)?)?;
    item.anchors
        .get(usize::from(score).checked_sub(1)?)
        .copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn twelve_items_in_order_with_four_anchors() {
        for (i, it) in ITEMS.iter().enumerate() {
            assert_eq!(usize::from(it.number), i + 1);
            assert!(it.anchors.iter().all(|a| !a.is_empty()));
        }
        assert_eq!(anchor(1, 4), Some("95%以上"));
        assert_eq!(anchor(13, 1), None);
        assert_eq!(anchor(2, 0), None);
        assert_eq!(anchor(2, 5), None);
    }
}
