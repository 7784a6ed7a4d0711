//! Seeding stores for consent and partner-API tests: persons, partner services, synthetic
//! resources in several categories, consent documents committed directly.

use gateway::domain::consent::{Action, Category, ConsentDocument, DOCUMENT_FORMAT};
use gateway::store::Db;
use gateway::store::consent::{self, CommitOutcome};
use gateway::store::records::{self, ImportOutcome, NewImport, NewPersonKey, NewResource};
use gateway::store::services::{self, Service, ServiceKind};

pub const DAY: i64 = 86_400_000;

pub async fn add_person(db: &Db, id: &str) {
    db.execute_raw(&format!(
        "INSERT INTO persons (id, created_at_ms) VALUES ('{id}', 0)"
    ))
    .await
    .unwrap();
}

pub async fn add_partner(db: &Db, id: &str) {
    services::upsert(
        db,
        &Service {
            id: id.into(),
            kind: ServiceKind::Partner,
            name: format!("{id} PHR"),
            purpose: "健康管理".into(),
            categories: vec![Category::Checkup, Category::Claims, Category::Attendance],
            period_days: 365,
            certificate_sha256: None,
            jwks: None,
            scopes: "system/*.read".into(),
            rate_per_sec: 1000,
        },
        0,
    )
    .await
    .unwrap();
}

/// A source service (健診機関) delivering health-check results.
pub async fn add_source(db: &Db, id: &str) {
    services::upsert(
        db,
        &Service {
            id: id.into(),
            kind: ServiceKind::Source,
            name: format!("{id} 健診機関"),
            purpose: "健診結果の提供".into(),
            categories: vec![Category::Checkup],
            period_days: 365,
            certificate_sha256: None,
            jwks: None,
            scopes: String::new(),
            rate_per_sec: 10,
        },
        0,
    )
    .await
    .unwrap();
}

pub fn resource(ty: &str, id: &str, key: &str, category: Category, patient: &str) -> NewResource {
    NewResource {
        resource_type: ty.into(),
        id: id.into(),
        person_key: key.into(),
        category: category.as_str().into(),
        fhir_category: Some("laboratory".into()),
        code: Some("urn:oid:1.2.392.200119.6.1005|9N001000000000001".into()),
        effective: Some("2024-05-01".into()),
        json: serde_json::json!({
            "resourceType": ty, "id": id, "subject": { "reference": format!("Patient/{patient}") }
        })
        .to_string(),
    }
}

/// Person `p{i}` with key `key-{i}`: 2 checkup Observations, 1 claims Condition, 1 attendance
/// Observation, and a Patient.
pub async fn seed_person(db: &Db, i: usize) -> String {
    let person = format!("p{i}");
    let key = format!("key-{i}");
    let patient = format!("pat-{i}");
    add_person(db, &person).await;
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let mut patient_resource = resource("Patient", &patient, &key, Category::Checkup, &patient);
    patient_resource.category = String::new();
    let imp = NewImport {
        content_sha256: digest,
        source_id: None,
        file_name: format!("seed-{i}.xml"),
        format: "test".into(),
        records: 1,
        person_keys: vec![NewPersonKey {
            person_key: key.clone(),
            patient_id: patient.clone(),
        }],
        resources: vec![
            patient_resource,
            resource(
                "Observation",
                &format!("obs-{i}-1"),
                &key,
                Category::Checkup,
                &patient,
            ),
            resource(
                "Observation",
                &format!("obs-{i}-2"),
                &key,
                Category::Checkup,
                &patient,
            ),
            resource(
                "Condition",
                &format!("cond-{i}"),
                &key,
                Category::Claims,
                &patient,
            ),
            resource(
                "Observation",
                &format!("hours-{i}"),
                &key,
                Category::Attendance,
                &patient,
            ),
        ],
    };
    assert!(matches!(
        records::import(db, &imp, 0).await.unwrap(),
        ImportOutcome::Imported { resources: 5, .. }
    ));
    assert!(
        records::link_person_key(db, &key, &person, 0)
            .await
            .unwrap()
    );
    person
}

pub fn document(
    person: &str,
    service: &str,
    version: i64,
    action: Action,
    categories: &[Category],
    start: i64,
    end: i64,
) -> ConsentDocument {
    ConsentDocument {
        format: DOCUMENT_FORMAT.into(),
        origin: "https://kiosk.test".into(),
        person_id: person.into(),
        service_id: service.into(),
        version,
        action,
        categories: categories.to_vec(),
        period_start_ms: start,
        period_end_ms: end,
        purpose: "健康管理".into(),
        issued_at_ms: start,
        salt: format!("salt-{version}"),
    }
}

/// Commits the next version (retrying on a concurrent version conflict).
pub async fn change(
    db: &Db,
    person: &str,
    service: &str,
    action: Action,
    categories: &[Category],
    start: i64,
    end: i64,
) -> i64 {
    loop {
        let version = consent::head(db, person, service)
            .await
            .unwrap()
            .map_or(1, |h| h.version + 1);
        let doc = document(person, service, version, action, categories, start, end);
        match consent::commit(db, &doc, "{}", &[0u8; 32], None, start)
            .await
            .unwrap()
        {
            CommitOutcome::Committed => return version,
            CommitOutcome::VersionConflict => continue,
            CommitOutcome::CardRecordReplayed => unreachable!("no card record"),
        }
    }
}

/// Resources under key `key-{i}` (as [`seed_person`]) linked to an existing person.
pub async fn seed_person_key(db: &Db, person: &str, i: usize) {
    let key = format!("key-{i}");
    let patient = format!("pat-{i}");
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
    digest[31] = 1;
    let imp = NewImport {
        content_sha256: digest,
        source_id: None,
        file_name: format!("seed-key-{i}.xml"),
        format: "test".into(),
        records: 1,
        person_keys: vec![NewPersonKey {
            person_key: key.clone(),
            patient_id: patient.clone(),
        }],
        resources: vec![
            resource(
                "Observation",
                &format!("obs-{i}-1"),
                &key,
                Category::Checkup,
                &patient,
            ),
            resource(
                "Observation",
                &format!("obs-{i}-2"),
                &key,
                Category::Checkup,
                &patient,
            ),
        ],
    };
    records::import(db, &imp, 0).await.unwrap();
    assert!(records::link_person_key(db, &key, person, 0).await.unwrap());
}

/// The resources of a `$everything` answer, read back from the Bundle JSON a partner gets (its
/// `total` and each entry's `fullUrl` checked on the way).
pub fn everything_resources(
    bundle: &gateway::domain::access::EverythingBundle,
) -> Vec<serde_json::Value> {
    const BASE: &str = "https://gw.test/fhir";
    let json: serde_json::Value =
        serde_json::from_str(&gateway::http::fhir::everything_searchset(BASE, bundle)).unwrap();
    assert_eq!(json["resourceType"], "Bundle");
    assert_eq!(json["total"], bundle.len());
    let entries = json["entry"].as_array().unwrap();
    assert_eq!(entries.len(), bundle.len());
    entries
        .iter()
        .map(|e| {
            let r = e["resource"].clone();
            let reference = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            assert_eq!(e["fullUrl"], format!("{BASE}/{reference}"));
            assert_eq!(e["search"]["mode"], "match");
            r
        })
        .collect()
}

/// `Type/id` of each resource of a `$everything` answer, in Bundle order.
pub fn everything_refs(bundle: &gateway::domain::access::EverythingBundle) -> Vec<String> {
    everything_resources(bundle)
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect()
}
