use super::*;
use crate::step::provisioner::tests::{ALL_KINDS, KeyKind, encrypt_jwk, generate_private_jwk};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::json;

/// Upstream vectors: smallstep/crypto `jose/testdata/{p256,okp}.enc.priv.json`, the JSON JWE
/// that `step crypto jwk create` writes (flattened), with the password their tests use.
const UPSTREAM_PASSWORD: &[u8] = b"password";
const UPSTREAM_P256: &str = r#"{
  "protected": "eyJhbGciOiJQQkVTMi1IUzI1NitBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIiwicDJjIjoxMDAwMDAsInAycyI6InFMYmNET3Yxczc3TlRGcnlKVUUtbmcifQ",
  "encrypted_key": "hY7Q7izJs6V1XvZI1l0RXJZ72XGg4anK",
  "iv": "gZb91xunOTgPqVF2",
  "ciphertext": "N-J28rcs385tnLyM32ynQpeRSn3nkcaaSoO9o0H7dxrsLJ7nV53DKGprDjAWhVWonbf3BxSIj1K5CUgMP8GPqUvJnZldgYILzvTRbGSPjYrGd5m2kUCAxIuRFbHNA35Lv02rfbNH9jvfdRvKhWvgunHS-a8vJCBCyk-Bd16Cp05G7tXp_EeVQXpUvNtQLd0v9NhWQ-tBeU86E3peCaJ97qipu7Xf23Axbng5azFzCGbSbmj4e0HN58HmHcpMDI8TgXrQ5-vDsRIE8U8YKJGqw5OVlRRM_gusQyZTBRHDFb5xkyFbD1SMpCRDdFTT0qS0k5vcH8ijpjSIs3K-sFo",
  "tag": "WG-RibO1NdWRaqHRHUwl3A"
}"#;
const UPSTREAM_P256_KID: &str = "V93A-Yh7Bhw1W2E0igFciviJzX4PXPswoVgriehm9Co";
const UPSTREAM_OKP: &str = r#"{
  "protected": "eyJhbGciOiJQQkVTMi1IUzI1NitBMTI4S1ciLCJlbmMiOiJBMjU2R0NNIiwicDJjIjoxMDAwMDAsInAycyI6ImxUMTJjQ29FUEdYWXV2V0JqNHFZZ1EifQ",
  "encrypted_key": "_029j7ZniKPgkRbVzwjgPPUtCdQacFMLB-k9p-INRksow1a1-wHGTA",
  "iv": "WyrGXSosdyfBNWMW",
  "ciphertext": "5DNleiF85yWEDZFXQj-XSZ6JlepRei3k8V15oMecxXB_XnT7CL5ufZ9e884P3RGinA0gl_x3ViYFdFJthqJ79aHw7VtRVfe3Ar3USUcttPHxZmtrXd2yGWn1Osw3jyADeuXXaSED2EWNHiXUsjC3IGoGMWbMtKW7KuckZudkanSzYFRvuCPdLrDrvnugoMZX-he-NM1181OiOvZjtA-3TPKVLk7tuSnTOcqQAvpKoAy18NS6orslnVfFMz6tyYq3RvD8lbc-RN3o6op4Cphz",
  "tag": "rCmSF2Ts2Q61KubS_Bmceg"
}"#;
/// The private scalar of `p256.priv.json`, which no error may ever show.
const UPSTREAM_P256_D: &str = "lgzkahW28vY8qXRFQd_Uphvl0Rfs9GyOj_ICkwy4V4s";
const UPSTREAM_P256_PLAIN: &str = r#"{"use":"sig","kty":"EC","kid":"V93A-Yh7Bhw1W2E0igFciviJzX4PXPswoVgriehm9Co","crv":"P-256","alg":"ES256","x":"JtPSvIKayHsCHobDnNWtOdoroh-MDwKQSYMW6Mo4cfU","y":"tP7xR5rpu6azzZsozdmzouyVByuTUDYSSAELTOAtu7g","d":"lgzkahW28vY8qXRFQd_Uphvl0Rfs9GyOj_ICkwy4V4s"}"#;

const PW: &[u8] = b"pw 1";

fn flattened(compact: &str) -> Value {
    let p: Vec<&str> = compact.split('.').collect();
    json!({"protected": p[0], "encrypted_key": p[1], "iv": p[2], "ciphertext": p[3], "tag": p[4]})
}

fn general(compact: &str) -> Value {
    let p: Vec<&str> = compact.split('.').collect();
    json!({"protected": p[0], "recipients": [{"encrypted_key": p[1]}], "iv": p[2],
           "ciphertext": p[3], "tag": p[4]})
}

/// Every base64 wrapping a Secret may hold: both alphabets, with and without padding, in lines.
fn wrappings(raw: &[u8]) -> Vec<Vec<u8>> {
    let std = STANDARD.encode(raw);
    let lines: String = std
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    vec![
        std.clone().into_bytes(),
        std.trim_end_matches('=').as_bytes().to_vec(),
        URL_SAFE.encode(raw).into_bytes(),
        URL_SAFE_NO_PAD.encode(raw).into_bytes(),
        lines.into_bytes(),
        format!("  {std}\r\n").into_bytes(),
    ]
}

fn message(material: &[u8], password: Option<&[u8]>) -> String {
    let err = provisioner_key_from_material(material, password).unwrap_err();
    assert_eq!(err.reason(), "InvalidProvisionerKey", "{err}");
    err.to_string()
}

#[test]
fn every_form_of_every_key_type_loads() {
    for kind in ALL_KINDS {
        let jwk = generate_private_jwk(kind);
        let kid = jwk.key_id().unwrap().to_owned();
        let compact = encrypt_jwk(&jwk, PW, 1000, "A256GCM");
        let plain = jwk.to_string();
        let forms: Vec<(Vec<u8>, Option<&[u8]>)> = vec![
            (compact.clone().into_bytes(), Some(PW)),
            (format!("\n{compact}\n").into_bytes(), Some(PW)),
            (flattened(&compact).to_string().into_bytes(), Some(PW)),
            (
                serde_json::to_vec_pretty(&general(&compact)).unwrap(),
                Some(PW),
            ),
            (plain.clone().into_bytes(), None),
            (plain.clone().into_bytes(), Some(&b"ignored"[..])),
        ];
        for (material, password) in forms {
            for candidate in std::iter::once(material.clone()).chain(wrappings(&material)) {
                let key = provisioner_key_from_material(&candidate, password).unwrap_or_else(|e| {
                    panic!("{kind:?} {}: {e}", String::from_utf8_lossy(&candidate))
                });
                assert_eq!(key.kid(), kid, "{kind:?}");
                assert_eq!(Some(key.alg()), jwk.algorithm(), "{kind:?}");
            }
        }
    }
}

#[test]
fn upstream_json_jwe_vectors() {
    let key =
        provisioner_key_from_material(UPSTREAM_P256.as_bytes(), Some(UPSTREAM_PASSWORD)).unwrap();
    assert_eq!(key.kid(), UPSTREAM_P256_KID);
    // This upstream key's "x" is not the public key of its "d" (go-jose signs with "d" alone):
    // step-ca would verify its tokens against "x" and refuse them all, so it is refused here.
    let err = provisioner_key_from_material(UPSTREAM_OKP.as_bytes(), Some(UPSTREAM_PASSWORD))
        .unwrap_err();
    assert_eq!(err.reason(), "UnsupportedKey", "{err}");
    assert!(err.to_string().contains("InconsistentComponents"), "{err}");
    let key = provisioner_key_from_material(UPSTREAM_P256_PLAIN.as_bytes(), None).unwrap();
    assert_eq!(key.kid(), UPSTREAM_P256_KID);
    let err =
        provisioner_key_from_material(UPSTREAM_P256.as_bytes(), Some(b"passwort")).unwrap_err();
    assert_eq!(err.reason(), "WrongPassword", "{err}");
}

#[test]
fn a_jwe_needs_a_password() {
    let compact = encrypt_jwk(&generate_private_jwk(KeyKind::P256), PW, 1000, "A128GCM");
    for password in [None, Some(&b""[..])] {
        let msg = message(compact.as_bytes(), password);
        assert!(
            msg.contains("a compact JWE, an encrypted key, but no provisioner password"),
            "{msg}"
        );
        let msg = message(STANDARD.encode(&compact).as_bytes(), password);
        assert!(msg.contains("base64 of a compact JWE"), "{msg}");
        let msg = message(UPSTREAM_P256.as_bytes(), password);
        assert!(msg.contains("a JSON JWE (flattened)"), "{msg}");
    }
}

#[test]
fn refusals_name_the_form_and_the_fix_never_the_material() {
    let mut public: Map<String, Value> = serde_json::from_str(UPSTREAM_P256_PLAIN).unwrap();
    public.remove("d");
    let public = Value::Object(public).to_string();
    let mut with_aad = flattened(&encrypt_jwk(
        &generate_private_jwk(KeyKind::P256),
        PW,
        1000,
        "A256GCM",
    ));
    with_aad["aad"] = json!("eA");
    let compact = encrypt_jwk(&generate_private_jwk(KeyKind::P256), PW, 1000, "A256GCM");
    let mut two = general(&compact);
    let r = two["recipients"][0].clone();
    two["recipients"] = json!([r.clone(), r]);
    let mut headed = general(&compact);
    headed["recipients"][0]["header"] = json!({"alg": "PBES2-HS256+A128KW"});
    let mut lacking = flattened(&compact);
    lacking.as_object_mut().unwrap().remove("iv");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            public.clone().into_bytes(),
            "holds a public JWK (no \"d\"): store the private key",
        ),
        (
            STANDARD.encode(&public).into_bytes(),
            "holds base64 of a public JWK",
        ),
        (
            b"not a key at all!".to_vec(),
            "neither a JWE (compact or JSON) nor a private JWK",
        ),
        (b"".to_vec(), "it holds nothing"),
        (
            b"-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n".to_vec(),
            "holds PEM",
        ),
        (b"eyJh.eyJz.c2ln".to_vec(), "3-part JWS or JWT"),
        (
            b"{\"kty\": ".to_vec(),
            "starts like JSON but is not a JSON object",
        ),
        (
            json!({"keys": [serde_json::from_str::<Value>(UPSTREAM_P256_PLAIN).unwrap()]})
                .to_string()
                .into_bytes(),
            "a JWK set",
        ),
        (
            b"{\"hello\":1}".to_vec(),
            "neither a JWK (no \"kty\") nor a JWE",
        ),
        (
            with_aad.to_string().into_bytes(),
            "additional authenticated data",
        ),
        (two.to_string().into_bytes(), "2 recipients"),
        (headed.to_string().into_bytes(), "a per-recipient header"),
        (
            lacking.to_string().into_bytes(),
            "without the \"iv\" member",
        ),
        (
            b"a.b.c.d.e".to_vec(),
            "a compact JWE that is not a JWE step-operator decrypts",
        ),
    ];
    for (material, want) in cases {
        let msg = message(&material, Some(PW));
        assert!(msg.contains(want), "want {want:?} in {msg}");
        assert!(!msg.contains(UPSTREAM_P256_D), "{msg}");
        if material.len() > 12 {
            let text = String::from_utf8_lossy(&material);
            assert!(!msg.contains(text.trim()), "{msg}");
        }
    }
}

#[test]
fn unsupported_keys_are_named() {
    let mut oct = json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"});
    let err = provisioner_key_from_material(oct.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err.reason(), "UnsupportedKey", "{err}");
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    oct["kty"] = json!("OKP");
    oct["crv"] = json!("X25519");
    oct["x"] = json!("eA");
    oct["d"] = json!("eA");
    oct.as_object_mut().unwrap().remove("alg");
    let err = provisioner_key_from_material(oct.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err.reason(), "UnsupportedKey", "{err}");
    assert!(err.to_string().contains("X25519"), "{err}");
    let mut p256: Value = serde_json::from_str(UPSTREAM_P256_PLAIN).unwrap();
    p256["alg"] = json!("ES384");
    let err = provisioner_key_from_material(p256.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err.reason(), "UnsupportedKey", "{err}");
    assert!(err.to_string().contains("ES384"), "{err}");
    assert!(!err.to_string().contains(UPSTREAM_P256_D), "{err}");
    // An encrypted key whose content is a public JWK.
    let public = provisioner_key_from_material(UPSTREAM_P256_PLAIN.as_bytes(), None)
        .unwrap()
        .public_jwk()
        .clone();
    let jwk = josekit::jwk::Jwk::from_map(public.as_object().unwrap().clone()).unwrap();
    let jwe = encrypt_jwk(&jwk, PW, 1000, "A256GCM");
    let err = provisioner_key_from_material(jwe.as_bytes(), Some(PW)).unwrap_err();
    assert_eq!(err.reason(), "UnsupportedKey", "{err}");
}

#[test]
fn a_ca_json_provisioner_entry_is_read_for_its_encrypted_key() {
    let jwk = generate_private_jwk(KeyKind::Ed25519);
    let entry = json!({"type": "JWK", "name": "admin", "key": {"kty": "OKP"},
                       "encryptedKey": encrypt_jwk(&jwk, PW, 1000, "A256GCM")});
    // The entry has "key", not "kty", at the top level.
    let key = provisioner_key_from_material(entry.to_string().as_bytes(), Some(PW)).unwrap();
    assert_eq!(Some(key.kid()), jwk.key_id());
}
