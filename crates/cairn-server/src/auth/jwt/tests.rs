use super::*;

fn key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/jwt")
        .join(name)
}

fn spec(method: SignMethod, public: Option<&str>, private: Option<&str>) -> JwtSpec {
    JwtSpec {
        method,
        pub_key: public.map(key),
        priv_key: private.map(key),
        ttl: DEFAULT_TTL,
    }
}

const TOKEN_KEY: &[u8] = &[9; 32];

fn claims() -> Claims {
    Claims {
        user: "alice".into(),
        credential_revision: 4,
        expires_unix_ms: 2_000_000,
    }
}

/// The private and public key files of each method's test key.
fn pairs() -> Vec<(SignMethod, &'static str, Option<&'static str>)> {
    use SignMethod::*;
    vec![
        (Rs256, "rsa.pem", Some("rsa.pub.pem")),
        (Rs384, "rsa.pkcs1.pem", Some("rsa.pub.pem")),
        (Rs512, "rsa.pem", Some("rsa.pub.pem")),
        (Ps256, "rsa.pkcs1.pem", Some("rsa.pub.pem")),
        (Ps384, "rsa.pem", Some("rsa.pub.pem")),
        (Ps512, "rsa.pem", Some("rsa.pub.pem")),
        (Es256, "ec256.sec1.pem", Some("ec256.pub.pem")),
        (Es384, "ec384.pem", Some("ec384.pub.pem")),
        (EdDsa, "ed25519.pem", Some("ed25519.pub.pem")),
        (Hs256, "hmac.secret", None),
        (Hs384, "hmac.secret", None),
        (Hs512, "hmac.secret", None),
    ]
}

#[test]
fn every_method_signs_and_a_verify_only_member_takes_its_tokens() {
    for (method, private, public) in pairs() {
        let signer = Jwt::load(&spec(method, public, Some(private))).unwrap();
        let token = signer.issue(TOKEN_KEY, &claims()).unwrap();
        let back = signer.verify(TOKEN_KEY, &token, 1_000_000);
        assert_eq!(back, Some(claims()), "{method:?}");
        // The public key derived from the private one verifies too.
        let derived = Jwt::load(&spec(method, None, Some(private))).unwrap();
        assert_eq!(derived.verify(TOKEN_KEY, &token, 0), Some(claims()));
        if let Some(public) = public {
            let verifier = Jwt::load(&spec(method, Some(public), None)).unwrap();
            assert_eq!(verifier.verify(TOKEN_KEY, &token, 0), Some(claims()));
            assert_eq!(verifier.issue(TOKEN_KEY, &claims()), None, "verify-only");
        }
    }
}

#[test]
fn tokens_carry_etcds_header_and_claims() {
    let jwt = Jwt::load(&spec(SignMethod::Rs256, None, Some("rsa.pem"))).unwrap();
    let token = jwt.issue(TOKEN_KEY, &claims()).unwrap();
    let parts: Vec<_> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let json = |part: &str| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!(
        json(parts[0]),
        serde_json::json!({"alg": "RS256", "typ": "JWT"})
    );
    let payload = json(parts[1]);
    assert_eq!(payload["username"], "alice");
    assert_eq!(payload["revision"], 4);
    assert_eq!(payload["exp"], 2_000, "seconds");
    // A 2048-bit RSA signature.
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 256);
}

#[test]
fn expired_foreign_altered_and_old_epoch_tokens_are_refused() {
    let jwt = Jwt::load(&spec(SignMethod::Rs256, None, Some("rsa.pem"))).unwrap();
    let token = jwt.issue(TOKEN_KEY, &claims()).unwrap();
    assert_eq!(
        jwt.verify(TOKEN_KEY, &token, 1_999_999).map(|c| c.user),
        Some("alice".into())
    );
    assert_eq!(jwt.verify(TOKEN_KEY, &token, 2_000_000), None, "expired");
    assert_eq!(jwt.verify(&[8; 32], &token, 0), None, "auth enabled again");
    assert_eq!(jwt.verify(&[], &token, 0), None, "auth never enabled");

    let other = Jwt::load(&spec(SignMethod::Rs256, None, Some("rsa-other.pem"))).unwrap();
    assert_eq!(other.verify(TOKEN_KEY, &token, 0), None, "another key");

    // Another user under the same signature.
    let (header, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut claims_json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims_json["username"] = "root".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims_json).unwrap());
    let forged = format!("{header}.{forged_payload}.{signature}");
    assert_eq!(jwt.verify(TOKEN_KEY, &forged, 0), None);

    // `alg: none`, and HS256 keyed with the public key: the method is the
    // member's, not the token's.
    let public = std::fs::read(key("rsa.pub.pem")).unwrap();
    for alg in ["none", "HS256"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let input = format!("{header}.{payload}");
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &public),
            input.as_bytes(),
        );
        for sig in [String::new(), URL_SAFE_NO_PAD.encode(tag.as_ref())] {
            assert_eq!(
                jwt.verify(TOKEN_KEY, &format!("{input}.{sig}"), 0),
                None,
                "{alg}"
            );
        }
    }

    for bad in [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b.c.d",
        &token[..token.len() - 2],
        &"x".repeat(5000),
    ] {
        assert_eq!(jwt.verify(TOKEN_KEY, bad, 0), None, "{bad:?}");
    }
    // Cairn's own tokens are not JWTs.
    let own = crate::auth::token::issue(TOKEN_KEY, &claims());
    assert_eq!(jwt.verify(TOKEN_KEY, &own, 0), None);
}

#[test]
fn specs_parse_as_etcds_and_say_what_is_wrong() {
    let parsed = JwtSpec::parse("sign-method=ES256,pub-key=/k/p.pem,priv-key=/k/s.pem,ttl=10m");
    assert_eq!(
        parsed,
        Ok(JwtSpec {
            method: SignMethod::Es256,
            pub_key: Some("/k/p.pem".into()),
            priv_key: Some("/k/s.pem".into()),
            ttl: Duration::from_secs(600),
        })
    );
    let default_ttl = JwtSpec::parse("priv-key=k,sign-method=RS512").unwrap();
    assert_eq!(default_ttl.ttl, Duration::from_secs(300));
    for (options, says) in [
        ("pub-key=k", "needs sign-method"),
        ("sign-method=RS256", "needs pub-key= or priv-key="),
        ("sign-method=ES512,priv-key=k", "ES512 is not supported"),
        ("sign-method=rs256,priv-key=k", "unknown sign-method"),
        ("sign-method=HS256,pub-key=k", "needs priv-key="),
        ("sign-method=RS256,priv-key=k,ttl=0s", "between"),
        ("sign-method=RS256,priv-key=k,ttl=soon", "not a duration"),
        (
            "sign-method=RS256,priv-key=k,colour=blue",
            "unknown jwt option",
        ),
        ("sign-method=RS256,priv-key", "not name=value"),
    ] {
        let err = JwtSpec::parse(options).unwrap_err();
        assert!(err.contains(says), "{options}: {err}");
    }
}

#[test]
fn keys_that_do_not_fit_fail_the_load_naming_the_file() {
    use SignMethod::*;
    for (method, public, private, says) in [
        (
            Rs256,
            Some("rsa-other.pub.pem"),
            Some("rsa.pem"),
            "not the public half",
        ),
        (Rs256, None, Some("ec256.sec1.pem"), "needs an RSA key"),
        (Es256, None, Some("rsa.pkcs1.pem"), "needs an EC key"),
        (Es256, None, Some("rsa.pem"), "not a key for ES256"),
        (Es384, None, Some("ec256.sec1.pem"), "not a key for ES384"),
        (EdDsa, None, Some("rsa.pem"), "not a key for EdDSA"),
        (Rs256, Some("ec256.pub.pem"), None, "not one for RS256"),
        (Es256, Some("rsa.pem"), None, "PUBLIC KEY"),
        (Rs256, None, Some("rsa.pub.pem"), "no PEM private key"),
        (Rs256, None, Some("missing.pem"), "missing.pem"),
    ] {
        let err = Jwt::load(&spec(method, public, private))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(says),
            "{method:?} {public:?} {private:?}: {err}"
        );
        assert!(err.contains("testdata/jwt/"), "names the file: {err}");
    }
}

#[test]
fn a_cached_verification_still_expires_and_a_new_token_key_misses_it() {
    let jwt = Jwt::load(&spec(SignMethod::Es256, None, Some("ec256.sec1.pem"))).unwrap();
    let token = jwt.issue(TOKEN_KEY, &claims()).unwrap();
    for _ in 0..2 {
        assert!(jwt.verify(TOKEN_KEY, &token, 1_999_999).is_some());
    }
    assert_eq!(jwt.verify(TOKEN_KEY, &token, 2_000_000), None, "expired");
    assert_eq!(jwt.verify(&[8; 32], &token, 0), None, "auth enabled again");
    // Refusals are not cached as approvals, nor approvals of one token
    // given to another.
    let other = jwt
        .issue(
            TOKEN_KEY,
            &Claims {
                user: "bob".into(),
                ..claims()
            },
        )
        .unwrap();
    assert_eq!(
        jwt.verify(TOKEN_KEY, &other, 0).map(|c| c.user),
        Some("bob".into())
    );
    // The cache stays bounded.
    for i in 0..(VERIFIED_CACHE_ENTRIES + 10) as u64 {
        let t = jwt
            .issue(
                TOKEN_KEY,
                &Claims {
                    credential_revision: i,
                    ..claims()
                },
            )
            .unwrap();
        assert!(jwt.verify(TOKEN_KEY, &t, 0).is_some());
    }
    assert!(jwt.verified.0.lock().unwrap().len() <= VERIFIED_CACHE_ENTRIES);
}
