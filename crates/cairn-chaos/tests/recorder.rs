//! The recorder under real concurrency, and JSON persistence.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_chaos::{check_history, Call, CheckOptions, History, Recorder, Ret};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Threads hammer a mutex-protected map through the recorder. The
/// linearization point (inside the lock) lies within every recorded
/// interval, so the history must be linearizable.
#[test]
fn threads_against_a_locked_map_are_linearizable() {
    let rec = Recorder::new();
    let store: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let threads: Vec<_> = (0..8u64)
        .map(|client| {
            let rec = rec.clone();
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(client);
                for n in 0..400 {
                    let key = format!("key{}", rng.random_range(0..4));
                    let value = format!("c{client}-{n}");
                    let call = match rng.random_range(0..4) {
                        0 => Call::Put { value },
                        1 => Call::Get,
                        2 => Call::Cas {
                            expected: store.lock().unwrap().get(&key).cloned(),
                            new: value,
                        },
                        _ => Call::Delete,
                    };
                    let op = rec.invoke(client, key.clone(), call.clone());
                    let ret = {
                        let mut s = store.lock().unwrap();
                        match call {
                            Call::Put { value } => {
                                s.insert(key, value);
                                Ret::Ok
                            }
                            Call::Get => Ret::Value(s.get(&key).cloned()),
                            Call::Cas { expected, new } => {
                                if s.get(&key) == expected.as_ref() {
                                    s.insert(key, new);
                                    Ret::Cas(true)
                                } else {
                                    Ret::Cas(false)
                                }
                            }
                            Call::Delete => Ret::Deleted(s.remove(&key).is_some()),
                        }
                    };
                    match rng.random_range(0..50) {
                        // Answer lost: outcome unknown to the client.
                        0 => op.unknown(),
                        // Handle dropped: also indeterminate.
                        1 => drop(op),
                        _ => op.complete(ret),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let h = rec.history();
    assert_eq!(h.len(), 8 * 400);
    h.validate_strict().unwrap();
    let r = check_history(&h, &CheckOptions::default()).unwrap();
    assert!(r.is_ok(), "{r}");
}

#[test]
fn recorder_stamps_and_discards() {
    let rec = Recorder::new();
    let a = rec.invoke(1, "k", Call::Put { value: "a".into() });
    let t0 = a.invoke_ns();
    a.complete(Ret::Ok);
    let b = rec.invoke(2, "k", Call::Put { value: "b".into() });
    b.discard(); // known not to have happened
    let c = rec.invoke(3, "k", Call::Get);
    let d = rec.invoke(4, "k", Call::Get);
    c.complete(Ret::Value(Some("a".into())));
    let h = rec.history();
    assert_eq!(h.len(), 3);
    assert!(h
        .ops
        .iter()
        .all(|o| o.call != Call::Put { value: "b".into() }));
    let a = &h.ops[0];
    assert_eq!(a.invoke_ns, t0);
    assert!(a.complete_ns.unwrap() >= a.invoke_ns);
    assert!(h.ops[1].complete_ns.unwrap() >= h.ops[1].invoke_ns);
    // Still pending: indeterminate, no give-up time yet.
    assert!(h.ops[2].is_indeterminate());
    assert_eq!(h.ops[2].complete_ns, None);
    drop(d);
    // Dropped: indeterminate with a give-up time.
    let h = rec.history();
    assert!(h.ops[2].is_indeterminate());
    assert!(h.ops[2].complete_ns.is_some());
    assert!(check_history(&h, &CheckOptions::default()).unwrap().is_ok());
}

#[test]
fn json_round_trip_and_recheck() {
    let ops = vec![
        put(1, "a", 0, 10),
        put_unknown(2, "b", 5),
        cas(3, Some("a"), "c", true, 20, 30),
        del(4, true, 40, 50),
        get(5, None, 60, 70),
        get(5, Some("a"), 80, 90), // illegal: "a" was replaced and deleted
    ];
    let h = History::new(ops);
    let json = h.to_json();
    assert!(json.contains("\"type\": \"cas\""), "{json}");
    let back = History::from_json(&json).unwrap();
    assert_eq!(back, h);

    let path = std::env::temp_dir().join(format!("cairn-chaos-{}.json", std::process::id()));
    h.save(&path).unwrap();
    let loaded = History::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded, h);

    let r = check_history(&loaded, &CheckOptions::default()).unwrap();
    let v = r.violation().expect("illegal");
    // The violation's history survives a round trip and is still illegal.
    let small = History::from_json(&v.history().to_json()).unwrap();
    assert!(check_history(&small, &CheckOptions::default())
        .unwrap()
        .is_illegal());
    // The full partition too.
    assert!(
        check_history(&v.partition_history(), &CheckOptions::default())
            .unwrap()
            .is_illegal()
    );
}

#[test]
fn json_format_is_stable() {
    let json = r#"{"ops":[
        {"client":1,"key":"k","call":{"type":"put","value":"a"},"invoke_ns":0,"complete_ns":10,"result":"ok"},
        {"client":2,"key":"k","call":{"type":"get"},"invoke_ns":20,"complete_ns":30,"result":{"value":"a"}},
        {"client":3,"key":"k","call":{"type":"cas","expected":null,"new":"b"},"invoke_ns":40,"complete_ns":50,"result":{"cas":false}},
        {"client":4,"key":"k","call":{"type":"delete"},"invoke_ns":60,"complete_ns":70,"result":{"deleted":true}},
        {"client":5,"key":"k","call":{"type":"put","value":"z"},"invoke_ns":80}
    ]}"#;
    let h = History::from_json(json).unwrap();
    assert_eq!(h.len(), 5);
    assert!(h.ops[4].is_indeterminate());
    assert!(check_history(&h, &CheckOptions::default()).unwrap().is_ok());
}
