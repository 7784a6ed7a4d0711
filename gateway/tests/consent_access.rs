//! Consent decisions on partner reads, on SQLite and PostgreSQL (security-scenarios E1–E3, E6–E8,
//! G7): the decision table with period edges ±1 s, 1,000 random non-consented pairs, category
//! isolation, kept `$everything` Bundles following data changes, 10,000 randomised
//! revoke/re-grant/read interleavings from 8 clients, audit failure, and idempotent all-or-nothing
//! imports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::seed::add_partner;
use common::seed::{DAY, change, everything_refs, everything_resources, seed_person};
use common::{Backend, TestDb};
use gateway::clock::{Clock, ManualClock, SharedClock, SystemClock};
use gateway::domain::access::{AccessError, PartnerAccess, SearchParams};
use gateway::domain::consent::{Action, Category};
use gateway::domain::trail::{MemoryTrail, TrailEvent};
use gateway::store::records::{self, ImportOutcome};
use std::sync::Arc;
use std::time::Instant;

fn search(person: &str, ty: &str) -> SearchParams {
    SearchParams {
        patient: person.into(),
        resource_type: ty.into(),
        count: 100,
        ..SearchParams::default()
    }
}

fn refs(served: &[gateway::domain::access::ServedResource]) -> Vec<String> {
    served.iter().map(|r| r.reference.clone()).collect()
}

// ------------------------------------------------------------------------- decision table

async fn decision_table(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let person = seed_person(&db, 1).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let trail = Arc::new(MemoryTrail::new());
    let access = PartnerAccess::new(db.clone(), clock.clone(), trail.clone());
    let now = clock.now_ms();

    // No consent: every kind of request is refused, as for a person that does not exist.
    assert!(matches!(
        access.patient("partner-a", &person).await,
        Err(AccessError::NotFound)
    ));
    assert!(matches!(
        access.read("partner-a", "Observation", "obs-1-1").await,
        Err(AccessError::NotFound)
    ));
    assert!(matches!(
        access.everything("partner-a", &person).await,
        Err(AccessError::NotFound)
    ));

    // Permit for checkup from now+1 s to now+10 s.
    let start = now + 1_000;
    let end = now + 10_000;
    change(
        &db,
        &person,
        "partner-a",
        Action::Grant,
        &[Category::Checkup],
        start,
        end,
    )
    .await;
    // Before the period: t−1 s refused.
    assert!(matches!(
        access.read("partner-a", "Observation", "obs-1-1").await,
        Err(AccessError::NotFound)
    ));
    clock.set_ms(start);
    let obs = access
        .read("partner-a", "Observation", "obs-1-1")
        .await
        .unwrap();
    assert!(
        obs.json.contains("\"Patient/p1\""),
        "reference rewritten: {}",
        obs.json
    );
    assert!(!obs.json.contains("pat-1"));
    // Not the claims category.
    assert!(matches!(
        access.read("partner-a", "Condition", "cond-1").await,
        Err(AccessError::NotFound)
    ));
    // E8: end − 1 s permitted, end + 1 s refused (and end itself: exclusive).
    clock.set_ms(end - 1_000);
    assert!(
        access
            .read("partner-a", "Observation", "obs-1-1")
            .await
            .is_ok()
    );
    clock.set_ms(end);
    assert!(matches!(
        access.read("partner-a", "Observation", "obs-1-1").await,
        Err(AccessError::NotFound)
    ));
    clock.set_ms(end + 1_000);
    assert!(matches!(
        access.read("partner-a", "Observation", "obs-1-1").await,
        Err(AccessError::NotFound)
    ));

    // Permit again, then deny (revoke) beats it.
    let now = clock.now_ms();
    change(
        &db,
        &person,
        "partner-a",
        Action::Grant,
        &[Category::Checkup, Category::Claims],
        now,
        now + DAY,
    )
    .await;
    assert!(
        access
            .read("partner-a", "Condition", "cond-1")
            .await
            .is_ok()
    );
    change(&db, &person, "partner-a", Action::Revoke, &[], now, now).await;
    assert!(matches!(
        access.read("partner-a", "Condition", "cond-1").await,
        Err(AccessError::NotFound)
    ));
    assert!(matches!(
        access
            .search("partner-a", &search(&person, "Observation"))
            .await,
        Err(AccessError::NotFound)
    ));

    // Every decision was audited, permits and denies alike (E10).
    let events = trail.events();
    let denies = events
        .iter()
        .filter(|e| matches!(e, TrailEvent::Access(a) if a.denied.is_some()))
        .count();
    let permits = events
        .iter()
        .filter(|e| matches!(e, TrailEvent::Access(a) if a.denied.is_none()))
        .count();
    assert_eq!((permits, denies), (3, 9), "{events:#?}");
    t.cleanup().await;
}

#[tokio::test]
async fn decision_table_sqlite() {
    decision_table(Backend::Sqlite).await;
}

#[tokio::test]
async fn decision_table_postgres() {
    decision_table(Backend::Postgres).await;
}

// ------------------------------------------------------------- E2: random non-consented pairs

async fn random_pairs(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    for p in ["partner-a", "partner-b", "partner-c"] {
        add_partner(&db, p).await;
    }
    let mut persons = Vec::new();
    for i in 0..20 {
        persons.push(seed_person(&db, i).await);
    }
    let now = SystemClock.now_ms();
    // partner-a is consented by everyone; partner-b by nobody; partner-c was revoked by all.
    for p in &persons {
        change(
            &db,
            p,
            "partner-a",
            Action::Grant,
            &Category::ALL,
            now - DAY,
            now + DAY,
        )
        .await;
        change(
            &db,
            p,
            "partner-c",
            Action::Grant,
            &Category::ALL,
            now - DAY,
            now + DAY,
        )
        .await;
        change(&db, p, "partner-c", Action::Revoke, &[], now, now).await;
    }
    let trail = Arc::new(MemoryTrail::new());
    let access = PartnerAccess::new(db.clone(), Arc::new(SystemClock), trail.clone());
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for n in 0..1_000 {
        let partner = if next() % 2 == 0 {
            "partner-b"
        } else {
            "partner-c"
        };
        // Existing persons, guessed ids, and ids of another shape.
        let person = match next() % 3 {
            0 => persons[(next() % 20) as usize].clone(),
            1 => format!("p{}", 20 + next() % 10_000),
            _ => format!("{:x}", next()),
        };
        let i = next() % 20;
        let result = match n % 4 {
            0 => access.patient(partner, &person).await.map(|_| ()),
            1 => access.everything(partner, &person).await.map(|_| ()),
            2 => access
                .search(partner, &search(&person, "Observation"))
                .await
                .map(|_| ()),
            _ => access
                .read(partner, "Observation", &format!("obs-{i}-1"))
                .await
                .map(|_| ()),
        };
        assert!(
            matches!(result, Err(AccessError::NotFound)),
            "pair {n}: {partner} {person}: {result:?}"
        );
    }
    assert_eq!(trail.events().len(), 1_000);
    // The consented partner still reads (the refusals above are not a broken store).
    assert!(access.everything("partner-a", &persons[0]).await.is_ok());
    t.cleanup().await;
}

#[tokio::test]
async fn thousand_random_non_consented_pairs_are_refused_sqlite() {
    random_pairs(Backend::Sqlite).await;
}

#[tokio::test]
async fn thousand_random_non_consented_pairs_are_refused_postgres() {
    random_pairs(Backend::Postgres).await;
}

// --------------------------------------------------------------- E3: only the consented category

async fn category_isolation(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let person = seed_person(&db, 7).await;
    let now = SystemClock.now_ms();
    change(
        &db,
        &person,
        "partner-a",
        Action::Grant,
        &[Category::Attendance],
        now - 1,
        now + DAY,
    )
    .await;
    let access = PartnerAccess::new(
        db.clone(),
        Arc::new(SystemClock),
        Arc::new(MemoryTrail::new()),
    );
    let all = access.everything("partner-a", &person).await.unwrap();
    assert_eq!(
        everything_refs(&all),
        vec!["Patient/p7", "Observation/hours-7"]
    );
    let obs = access
        .search("partner-a", &search(&person, "Observation"))
        .await
        .unwrap();
    assert_eq!(refs(&obs), vec!["Observation/hours-7"]);
    for (ty, id) in [
        ("Observation", "obs-7-1"),
        ("Observation", "obs-7-2"),
        ("Condition", "cond-7"),
    ] {
        assert!(matches!(
            access.read("partner-a", ty, id).await,
            Err(AccessError::NotFound)
        ));
    }
    let conditions = access
        .search("partner-a", &search(&person, "Condition"))
        .await
        .unwrap();
    assert!(conditions.is_empty());
    // Asking for a category outside the consent narrows to nothing, never widens.
    let mut p = search(&person, "Observation");
    p.categories = Some(vec![Category::Checkup]);
    assert!(access.search("partner-a", &p).await.unwrap().is_empty());
    t.cleanup().await;
}

#[tokio::test]
async fn consented_category_returns_nothing_outside_it_sqlite() {
    category_isolation(Backend::Sqlite).await;
}

#[tokio::test]
async fn consented_category_returns_nothing_outside_it_postgres() {
    category_isolation(Backend::Postgres).await;
}

// ------------------------------------------------------ $everything assembled by the database

async fn everything_assembly(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let person = seed_person(&db, 8).await;
    common::seed::seed_person_key(&db, &person, 9).await;
    // The same resource again under the person's second key (another file): served once.
    let again = records::NewImport {
        content_sha256: [89; 32],
        source_id: None,
        file_name: "again.xml".into(),
        format: "test".into(),
        records: 1,
        person_keys: vec![records::NewPersonKey {
            person_key: "key-9".into(),
            patient_id: "pat-9".into(),
        }],
        resources: vec![common::seed::resource(
            "Observation",
            "obs-8-1",
            "key-9",
            Category::Checkup,
            "pat-9",
        )],
    };
    records::import(&db, &again, 0).await.unwrap();
    let now = SystemClock.now_ms();
    change(
        &db,
        &person,
        "partner-a",
        Action::Grant,
        &[Category::Checkup, Category::Attendance],
        now - 1,
        now + DAY,
    )
    .await;
    let trail = Arc::new(MemoryTrail::new());
    let access = PartnerAccess::new(db.clone(), Arc::new(SystemClock), trail.clone());
    let all = access.everything("partner-a", &person).await.unwrap();
    let expected = [
        "Patient/p8",
        "Observation/hours-8",
        "Observation/obs-8-1",
        "Observation/obs-8-2",
        "Observation/obs-9-1",
        "Observation/obs-9-2",
    ];
    assert_eq!(everything_refs(&all), expected);
    // Both keys' Patient references now name the person; the claims Condition stays out.
    for r in everything_resources(&all).iter().skip(1) {
        assert_eq!(
            r["subject"]["reference"],
            format!("Patient/{person}"),
            "{r}"
        );
    }
    let events = trail.events();
    let [TrailEvent::Access(e)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(e.resources, expected);
    assert_eq!(e.served, expected.len());
    assert_eq!(e.denied, None);
    t.cleanup().await;
}

#[tokio::test]
async fn everything_serves_each_resource_once_under_the_persons_id_sqlite() {
    everything_assembly(Backend::Sqlite).await;
}

#[tokio::test]
async fn everything_serves_each_resource_once_under_the_persons_id_postgres() {
    everything_assembly(Backend::Postgres).await;
}

/// A file of `resources` Observations under `key` (linked or not), stored without a person.
async fn import_observations(db: &gateway::store::Db, tag: u8, key: &str, ids: &[&str]) {
    let imp = records::NewImport {
        content_sha256: [tag; 32],
        source_id: None,
        file_name: format!("more-{tag}.xml"),
        format: "test".into(),
        records: 1,
        person_keys: vec![records::NewPersonKey {
            person_key: key.into(),
            patient_id: format!("pat-of-{key}"),
        }],
        resources: ids
            .iter()
            .map(|id| {
                common::seed::resource(
                    "Observation",
                    id,
                    key,
                    Category::Checkup,
                    &format!("pat-of-{key}"),
                )
            })
            .collect(),
    };
    records::import(db, &imp, 0).await.unwrap();
}

/// Commits a grant of `categories` to partner-a from `at` - 1 ms for a day.
async fn grant_a(db: &gateway::store::Db, person: &str, categories: &[Category], at: i64) {
    change(
        db,
        person,
        "partner-a",
        Action::Grant,
        categories,
        at - 1,
        at + DAY,
    )
    .await;
}

async fn kept_bundles(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let person = seed_person(&db, 20).await;
    let both = [Category::Checkup, Category::Attendance];
    let now = SystemClock.now_ms();
    grant_a(&db, &person, &both, now).await;
    let trail = Arc::new(MemoryTrail::new());
    let access = PartnerAccess::new(db.clone(), Arc::new(SystemClock), trail.clone());
    let first = access.everything("partner-a", &person).await.unwrap();
    let again = access.everything("partner-a", &person).await.unwrap();
    // Nothing changed: the same Bundle, still audited per request.
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(trail.events().len(), 2);
    // A file for the person's linked key: served at once.
    import_observations(&db, 201, "key-20", &["obs-20-3"]).await;
    let grown = access.everything("partner-a", &person).await.unwrap();
    assert_eq!(
        everything_refs(&grown),
        [
            "Patient/p20",
            "Observation/hours-20",
            "Observation/obs-20-1",
            "Observation/obs-20-2",
            "Observation/obs-20-3"
        ]
    );
    // Someone else's file does not disturb the kept Bundle; linking its key to the person does,
    // with its Patient references rewritten to the person.
    import_observations(&db, 202, "key-other", &["obs-x"]).await;
    let same = access.everything("partner-a", &person).await.unwrap();
    assert!(Arc::ptr_eq(&grown, &same));
    assert!(
        records::link_person_key(&db, "key-other", &person, 1)
            .await
            .unwrap()
    );
    let linked = access.everything("partner-a", &person).await.unwrap();
    let resources = everything_resources(&linked);
    let obs_x = resources
        .iter()
        .find(|r| r["id"] == "obs-x")
        .expect("the linked key's resource is served");
    assert_eq!(obs_x["subject"]["reference"], format!("Patient/{person}"));
    // A narrower consent is another Bundle; widening again finds the kept one.
    grant_a(&db, &person, &[Category::Attendance], now).await;
    let narrow = access.everything("partner-a", &person).await.unwrap();
    assert_eq!(
        everything_refs(&narrow),
        ["Patient/p20", "Observation/hours-20"]
    );
    grant_a(&db, &person, &both, now).await;
    let wide = access.everything("partner-a", &person).await.unwrap();
    assert!(Arc::ptr_eq(&linked, &wide));
    // After an erasure and a new grant, nothing of the erased data is served.
    let erased = gateway::store::erasure::erase(
        &db,
        &gateway::store::erasure::ErasureCommit {
            person_id: &person,
            now_ms: now,
            backup_purge_due_ms: now + DAY,
            document: "{}",
            token: "t",
            card_fingerprint: &[0u8; 32],
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(erased, gateway::store::erasure::EraseOutcome::Erased(_)),
        "{erased:?}"
    );
    let later = SystemClock.now_ms();
    grant_a(&db, &person, &both, later).await;
    let after = access.everything("partner-a", &person).await.unwrap();
    assert_eq!(everything_refs(&after), ["Patient/p20"]);
    t.cleanup().await;
}

#[tokio::test]
async fn kept_everything_bundles_follow_imports_links_consent_and_erasure_sqlite() {
    kept_bundles(Backend::Sqlite).await;
}

#[tokio::test]
async fn kept_everything_bundles_follow_imports_links_consent_and_erasure_postgres() {
    kept_bundles(Backend::Postgres).await;
}

/// On SQLite the partner reads run on their own connections (rusqlite): they answer exactly as
/// the sqlx statements do, for consented, refused, unknown and erased-to-nothing cases.
#[tokio::test]
async fn direct_sqlite_partner_reads_answer_as_the_sqlx_statements() {
    use gateway::store::partner_reads::PartnerReads;
    let t = TestDb::new(Backend::Sqlite).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let person = seed_person(&db, 30).await;
    common::seed::seed_person_key(&db, &person, 31).await;
    let bare = "p-bare";
    common::seed::add_person(&db, bare).await;
    grant_a(&db, &person, &[Category::Checkup], SystemClock.now_ms()).await;
    let reads = PartnerReads::new(db.clone());
    for (ty, id, service) in [
        ("Observation", "obs-30-1", "partner-a"),
        ("Condition", "cond-30", "partner-a"),
        ("Observation", "obs-31-2", "partner-b"),
        ("Observation", "nothing", "partner-a"),
    ] {
        assert_eq!(
            reads.get_with_consent(ty, id, service).await.unwrap(),
            records::get_with_consent(&db, ty, id, service)
                .await
                .unwrap(),
            "{ty}/{id} for {service}"
        );
    }
    for (who, service) in [
        (person.as_str(), "partner-a"),
        (bare, "partner-a"),
        ("nobody", "partner-a"),
    ] {
        assert_eq!(
            reads.head_and_data_version(who, service).await.unwrap(),
            gateway::store::consent::head_and_data_version(&db, who, service)
                .await
                .unwrap(),
            "{who}"
        );
    }
    for (who, categories) in [
        (person.as_str(), vec!["A.checkup", "B.attendance"]),
        (person.as_str(), vec![]),
        (bare, vec!["A.checkup"]),
    ] {
        let direct = reads
            .everything_rows(who, &categories, 5_000)
            .await
            .unwrap();
        let sqlx = records::everything_rows(&db, who, &categories, 5_000)
            .await
            .unwrap();
        assert_eq!(direct, sqlx, "{who} {categories:?}");
    }
    // The person's rows as read: 4 checkup Observations over two keys, their Patient ids, and the
    // version after linking the two keys (each file was imported before its key was linked, when
    // it was no one's data yet).
    let rows = reads
        .everything_rows(&person, &["A.checkup"], 5_000)
        .await
        .unwrap();
    assert_eq!(rows.count, 4);
    assert_eq!(rows.data_version, 2);
    let mut ids: Vec<&str> = rows.patient_ids.split('\u{1e}').collect();
    ids.sort_unstable();
    assert_eq!(ids, ["pat-30", "pat-31"]);
    t.cleanup().await;
}

// ------------------------------------------------- E6/E7: revoke, re-grant and read interleavings

#[derive(Debug, Clone)]
enum Op {
    /// A committed change: version, grant?, started, acknowledged.
    Change(i64, bool, Instant, Instant),
    /// A read: started, finished, served?
    Read(Instant, Instant, bool),
}

async fn interleavings(backend: Backend, total: usize) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let person = seed_person(&db, 3).await;
    let now = SystemClock.now_ms();
    change(
        &db,
        &person,
        "partner-a",
        Action::Grant,
        &[Category::Checkup],
        now - DAY,
        now + DAY,
    )
    .await;
    let clock: SharedClock = Arc::new(SystemClock);
    let access = Arc::new(PartnerAccess::new(
        db.clone(),
        clock,
        Arc::new(MemoryTrail::new()),
    ));
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let db = db.clone();
        let access = access.clone();
        let person = person.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (client + 1).wrapping_mul(0x1234_5678_9abc);
            let mut ops = Vec::new();
            for _ in 0..total / 8 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                match rng % 10 {
                    0 | 1 => {
                        let grant = rng % 20 < 2;
                        let started = Instant::now();
                        let now = SystemClock.now_ms();
                        let version = if grant {
                            change(
                                &db,
                                &person,
                                "partner-a",
                                Action::Grant,
                                &[Category::Checkup],
                                now - DAY,
                                now + DAY,
                            )
                            .await
                        } else {
                            change(&db, &person, "partner-a", Action::Revoke, &[], now, now).await
                        };
                        ops.push(Op::Change(version, grant, started, Instant::now()));
                    }
                    _ => {
                        let started = Instant::now();
                        let served = match access
                            .search("partner-a", &search(&person, "Observation"))
                            .await
                        {
                            Ok(r) => {
                                assert_eq!(r.len(), 2);
                                true
                            }
                            Err(AccessError::NotFound) => false,
                            Err(e) => panic!("{e}"),
                        };
                        ops.push(Op::Read(started, Instant::now(), served));
                    }
                }
            }
            ops
        }));
    }
    let mut ops = Vec::new();
    for t in tasks {
        ops.extend(t.await.unwrap());
    }
    let changes: Vec<(i64, bool, Instant, Instant)> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Change(v, g, s, a) => Some((*v, *g, *s, *a)),
            Op::Read(..) => None,
        })
        .collect();
    let reads: Vec<(Instant, Instant, bool)> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Read(s, e, served) => Some((*s, *e, *served)),
            Op::Change(..) => None,
        })
        .collect();
    assert!(changes.iter().any(|c| !c.1) && changes.iter().any(|c| c.1));
    let mut violations = 0;
    let mut served = 0;
    for (start, end, was_served) in &reads {
        if !was_served {
            continue;
        }
        served += 1;
        // A revoke acknowledged before the read started, with no later-version grant that had
        // started before the read finished, must have refused the read.
        let blocking = changes
            .iter()
            .filter(|(_, grant, _, ack)| !grant && ack < start);
        for (rv, ..) in blocking {
            let regranted = changes
                .iter()
                .any(|(gv, grant, gstart, _)| *grant && gv > rv && gstart < end);
            if !regranted {
                violations += 1;
                break;
            }
        }
    }
    assert_eq!(
        violations, 0,
        "{violations} reads served after a revoke they follow"
    );
    assert!(served > 0, "some reads were served");
    assert_eq!(changes.len() + reads.len(), total);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_revoke_regrant_read_interleavings_sqlite() {
    interleavings(Backend::Sqlite, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_revoke_regrant_read_interleavings_postgres() {
    interleavings(Backend::Postgres, 10_000).await;
}

// ------------------------------------------------------------------ G7: no audit, no data

#[tokio::test]
async fn a_failing_audit_write_refuses_the_read() {
    let t = TestDb::new(Backend::Sqlite).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let person = seed_person(&db, 1).await;
    let now = SystemClock.now_ms();
    change(
        &db,
        &person,
        "partner-a",
        Action::Grant,
        &[Category::Checkup],
        now - 1,
        now + DAY,
    )
    .await;
    let trail = Arc::new(MemoryTrail::new());
    let access = PartnerAccess::new(db.clone(), Arc::new(SystemClock), trail.clone());
    assert!(access.everything("partner-a", &person).await.is_ok());
    trail.set_failing(true);
    assert!(matches!(
        access.everything("partner-a", &person).await,
        Err(AccessError::AuditUnavailable(_))
    ));
    assert!(matches!(
        access.read("partner-a", "Observation", "obs-1-1").await,
        Err(AccessError::AuditUnavailable(_))
    ));
    trail.set_failing(false);
    assert!(
        access
            .read("partner-a", "Observation", "obs-1-1")
            .await
            .is_ok()
    );
    t.cleanup().await;
}

// --------------------------------------------------------------------------------- imports

async fn import_is_idempotent(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data-converter/tests/fixtures");
    let archive = dir.join("archive/1399999991_06139999_202406100_1.zip");
    let bytes = std::fs::read(&archive).unwrap();
    let imp = gateway::domain::import::convert(&bytes, "1399999991_06139999_202406100_1.zip", None)
        .unwrap();
    assert!(imp.records >= 1 && !imp.resources.is_empty());
    let first = records::import(&db, &imp, 1).await.unwrap();
    let ImportOutcome::Imported { id, resources } = first else {
        panic!("{first:?}")
    };
    assert!(resources > 0);
    let counts = records::counts(&db).await.unwrap();
    // The same bytes again: nothing written.
    assert_eq!(
        records::import(&db, &imp, 2).await.unwrap(),
        ImportOutcome::AlreadyImported { id }
    );
    assert_eq!(records::counts(&db).await.unwrap(), counts);
    // A broken file converts to nothing at all.
    let mut truncated = bytes.clone();
    truncated.truncate(bytes.len() / 2);
    let err = gateway::domain::import::convert(&truncated, "broken.zip", None).unwrap_err();
    assert!(err.to_string().contains("broken.zip"), "{err}");
    let err = gateway::domain::import::convert(b"a,b\n", "x.csv", None).unwrap_err();
    assert!(err.to_string().contains("x.csv"), "{err}");
    t.cleanup().await;
}

#[tokio::test]
async fn import_of_the_same_bytes_is_a_no_op_sqlite() {
    import_is_idempotent(Backend::Sqlite).await;
}

#[tokio::test]
async fn import_of_the_same_bytes_is_a_no_op_postgres() {
    import_is_idempotent(Backend::Postgres).await;
}
