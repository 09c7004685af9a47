//! Per-request CPU of the webhook path without HTTP or the WAL: signature check,
//! parse + hash, WAL serialisation, for 100,000 single-status webhooks.
//! `cargo run --release -p chatlake-ingest --example parse_cost`

use chatlake_ingest::{Normalizer, signature, whatsapp};
use chatlake_model::Ts;
use std::time::Instant;

fn main() {
    let n = 100_000;
    let norm = Normalizer::new("k", &Default::default(), "1");
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"statuses":[{{"id":"wamid.bench{i:012}","status":"delivered","timestamp":"{}","recipient_id":"55119{:08}","pricing":{{"billable":true,"pricing_model":"PMP","type":"regular","category":"marketing"}}}}]}},"field":"messages"}}]}}]}}"#,
                1_767_225_600 + i,
                i
            )
        })
        .collect();
    let sigs: Vec<String> = bodies
        .iter()
        .map(|b| signature::sign_whatsapp("s", b.as_bytes()))
        .collect();
    let per = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let t = Instant::now();
    let ok = bodies
        .iter()
        .zip(&sigs)
        .filter(|(b, s)| signature::verify_whatsapp("s", b.as_bytes(), Some(s)))
        .count();
    println!("signature check: {:.2} µs/request ({ok} verified)", per(t));

    let t = Instant::now();
    let events: Vec<_> = bodies
        .iter()
        .map(|b| {
            whatsapp::parse(b.as_bytes(), &norm, Ts::now(), None)
                .expect("parses")
                .events
        })
        .collect();
    println!("parse + hash:    {:.2} µs/request", per(t));

    let t = Instant::now();
    let bytes: usize = events
        .iter()
        .map(|e| {
            chatlake_ingest::pipeline::encode_record(e)
                .expect("encodes")
                .len()
        })
        .sum();
    println!(
        "WAL encoding:    {:.2} µs/request ({} bytes/request)",
        per(t),
        bytes / n as usize
    );

    // The same events as JSON, the record format before 2026-12-03, for comparison.
    let t = Instant::now();
    let bytes: usize = events
        .iter()
        .map(|e| serde_json::to_vec(e).expect("serialises").len())
        .sum();
    println!(
        "as JSON instead: {:.2} µs/request ({} bytes/request)",
        per(t),
        bytes / n as usize
    );
}
