//! Entity JSON on its way through Redis. Mode `0`: what `portcullis entities import`
//! (and `put`) validates and writes. Mode `1`: what a decision reads back from an
//! entity's key (a uid line, a `--` line, the stored bytes). Mode `2`: an invalidation
//! message as writers publish it.
//!
//! Holds: no panic; everything import writes, the read path accepts as the same
//! entity under its key; a read error names the entity; a message decodes to the same
//! uids after it is encoded again; an entity's key gives back its uid.
#![no_main]

use std::str::FromStr;

use cedar_policy::EntityUid;
use libfuzzer_sys::fuzz_target;
use portcullis::entities::redis::cli::records;
use portcullis::entities::redis::invalidation::{decode, encode, Message};
use portcullis::entities::redis::parse_stored;
use portcullis::entities::redis::store::{entity_key, uid_of_key};
use portcullis_fuzz::{mode, parts, snapshot};

const PREFIX: &str = "portcullis:";

fn key_round_trips(uid: &EntityUid) {
    assert_eq!(
        uid_of_key(PREFIX, &entity_key(PREFIX, uid)).as_ref(),
        Some(uid)
    );
}

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = mode(data, 3);
    let snapshot = snapshot();
    match mode {
        0 => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else {
                return;
            };
            let written = match records(value, &snapshot.schema, &snapshot.types, "import.json") {
                Ok(r) => r,
                Err(e) => {
                    assert!(e.to_string().starts_with("import.json"), "{e:#}");
                    return;
                }
            };
            for (uid, json) in written {
                let stored = parse_stored(&uid, json.as_bytes(), snapshot)
                    .unwrap_or_else(|e| panic!("import wrote what reads fail on: {e}"));
                assert_eq!(stored.entity.uid(), uid);
                key_round_trips(&uid);
            }
        }
        1 => {
            let p = parts(rest, 2);
            let Ok(uid) = std::str::from_utf8(p[0])
                .ok()
                .map(EntityUid::from_str)
                .transpose()
            else {
                return;
            };
            let Some(uid) = uid else { return };
            match parse_stored(&uid, p[1], snapshot) {
                Ok(stored) => assert_eq!(stored.entity.uid(), uid),
                Err(e) => assert!(e.contains(&format!("`{uid}`")), "{e}"),
            }
            key_round_trips(&uid);
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Message::Uids { id, uids } = decode(text) {
                let id = id.unwrap_or_default();
                assert_eq!(
                    decode(&encode(&id, Some(&uids))),
                    Message::Uids {
                        id: Some(id),
                        uids: uids.clone()
                    }
                );
                for uid in &uids {
                    key_round_trips(uid);
                }
            }
        }
    }
});
