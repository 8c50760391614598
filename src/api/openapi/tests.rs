//! The document held to the router: its routes, security, parameters and
//! references, and real requests and answers checked against its schemas
//! (`answers`) with a strict JSON Schema checker (`schema`).

mod answers;
mod refusals;
mod schema;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use self::schema::{check, resolve};
use super::super::router;
use super::super::tests::{call, get, served, test_state};
use crate::auth::Access;

/// The document as served.
fn document() -> Value {
    serde_json::from_str(&super::super::route::DOCUMENT).expect("the document is JSON")
}

#[tokio::test]
async fn the_document_describes_every_route_and_method_served_and_no_other() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut served_operations = BTreeSet::new();
    for (path, access, methods) in served().await {
        for method in methods {
            let operation = &doc["paths"][path][method.as_str().to_lowercase()];
            assert!(
                operation.is_object(),
                "{method} {path} is not in the document"
            );
            assert!(operation["responses"].is_object(), "{method} {path}");
            // Protected operations take the document's bearer security; public
            // ones say they need none.
            match access {
                Access::Public => {
                    assert_eq!(operation["security"], json!([]), "{method} {path}")
                }
                Access::Token => {
                    assert!(operation.get("security").is_none(), "{method} {path}")
                }
            }
            served_operations.insert((path.to_owned(), method.as_str().to_lowercase()));
        }
    }
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert((path.clone(), method.clone()));
            }
        }
    }
    assert_eq!(
        documented, served_operations,
        "documented but not served, or the reverse"
    );
}

#[tokio::test]
async fn the_document_is_served_with_the_version() {
    let (state, _dir) = test_state().await;
    let (status, doc) = call(&router(state, 1 << 20), get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn every_path_parameter_is_declared_and_every_reference_resolves() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut in_path: Vec<&str> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        in_path.sort_unstable();
        for (method, operation) in item.as_object().unwrap() {
            let mut declared: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .inspect(|p| assert_eq!(p["required"], true, "{method} {path}: {p}"))
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            declared.sort_unstable();
            assert_eq!(declared, in_path, "{method} {path}");
        }
    }
    fn references<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    into.push(reference);
                }
                map.values().for_each(|v| references(v, into));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, into)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    references(&doc, &mut all);
    assert!(all.len() > 20, "{all:?}");
    for reference in all {
        resolve(&doc, reference);
    }
}

#[tokio::test]
async fn the_documented_batch_answer_lists_every_field_a_report_has_and_no_other() {
    use crate::intake::{Cost, EncodingCount, Group, Preview, Rejection, Report, SmsSummary};
    // Every optional part present: the fields a report can have.
    let rejection = Rejection {
        index: 1,
        to: "+8613800000000".into(),
        reason: "duplicate".into(),
        variable: Some("name".into()),
        first_index: Some(0),
        detail: "the same as recipient 0".into(),
    };
    let report = Report {
        batch_id: Some(crate::domain::BatchId::new().to_string()),
        dry_run: true,
        accepted: 1,
        rejected: vec![rejection],
        rejections: [(
            "duplicate".to_owned(),
            Group {
                count: 1,
                indices: vec![1],
            },
        )]
        .into(),
        provider: "log".into(),
        held_by_recipient_caps: Some(1),
        expires_at: Some("2026-01-01T00:00:00Z".into()),
        window: Some(crate::intake::WindowReport {
            window: "08:00-21:00".into(),
            timezone: "UTC".into(),
            waiting: 1,
            opens: vec![crate::intake::Opening {
                at: "2026-01-01T08:00:00Z".into(),
                count: 1,
            }],
        }),
        sms: Some(SmsSummary {
            segments: 1,
            gsm7: EncodingCount {
                messages: 1,
                segments: 1,
            },
            ucs2: EncodingCount::default(),
        }),
        cost: Some(Cost {
            amount: 0.05,
            currency: Some("CNY".into()),
        }),
        eta_seconds: Some(0.1),
        preview: vec![Preview {
            index: 0,
            to: "+8613800000001".into(),
            subject: Some("S".into()),
            body: "Hi".into(),
            encoding: Some(crate::sms::Encoding::Gsm7),
            segments: Some(1),
        }],
    };
    let written = serde_json::to_value(&report).unwrap();
    let doc = document();
    let documented =
        resolve(
            &doc,
            doc["paths"]["/v1/batches"]["post"]["responses"]["202"]["content"]["application/json"]
                ["schema"]["$ref"]
                .as_str()
                .unwrap(),
        );
    let fields: BTreeSet<&String> = written.as_object().unwrap().keys().collect();
    let properties: BTreeSet<&String> = documented["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(fields, properties);
    assert_eq!(documented["additionalProperties"], false);
    check(&doc, documented, &written, "report").unwrap();
    // A field the type does not have is refused, nested ones too.
    let mut extra = written.clone();
    extra["sms"]["gsm7"]["bits"] = json!(7);
    assert!(check(&doc, documented, &extra, "report").is_err());
}
