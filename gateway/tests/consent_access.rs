//! Consent decisions on partner reads, on SQLite and PostgreSQL (security-scenarios E1–E3, E6–E8,
//! G7): the decision table with period edges ±1 s, 1,000 random non-consented pairs, category
//! isolation, 10,000 randomised revoke/re-grant/read interleavings from 8 clients, audit failure,
//! and idempotent all-or-nothing imports.

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
