//! Whether a trusted key may vouch for a package today, beyond the signature's mathematics:
//! rPGP checks that a signature is valid for a key, not that the key is still usable.
//! GnuPG's rules, applied here: the key (and, for a subkey, its primary) is not revoked, not
//! expired, is allowed to sign (key flags of its newest self-signature), and the signature
//! does not rest on a broken hash (MD5, SHA-1, RIPEMD-160).

use std::time::{Duration, SystemTime};

use pgp::composed::SignedPublicKey;
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Timestamp};

/// Why a good signature still does not count; `None` when it does.
pub fn refusal(
    key: &SignedPublicKey,
    subkey: Option<usize>,
    sig: &Signature,
    now: SystemTime,
) -> Option<String> {
    if let Some(h @ (HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160)) =
        sig.hash_alg()
    {
        return Some(format!(
            "the signature uses {h}, which is broken for signatures: re-sign with SHA-256 or better (gpg --digest-algo SHA256)"
        ));
    }
    let primary = key.fingerprint();
    let self_signed = |s: &&Signature| {
        s.issuer_fingerprint().contains(&&primary)
            || s.issuer_key_id().contains(&&key.legacy_key_id())
    };
    if key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.typ() == Some(SignatureType::KeyRevocation))
    {
        return Some(format!("key {primary} is revoked"));
    }
    let primary_sigs = key
        .details
        .direct_signatures
        .iter()
        .chain(key.details.users.iter().flat_map(|u| u.signatures.iter()))
        .filter(self_signed);
    let primary_self = newest(primary_sigs);
    if let Some(why) = expired(
        "key",
        &primary.to_string(),
        key.primary_key.created_at(),
        primary_self,
        now,
    ) {
        return Some(why);
    }
    let (name, binding) = match subkey {
        None => (primary.to_string(), primary_self),
        Some(i) => {
            let sub = &key.public_subkeys[i];
            let name = format!("subkey {}", sub.key.fingerprint());
            if sub
                .signatures
                .iter()
                .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
            {
                return Some(format!("{name} is revoked"));
            }
            let binding = newest(
                sub.signatures
                    .iter()
                    .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding)),
            );
            if let Some(why) = expired("", &name, sub.key.created_at(), binding, now) {
                return Some(why);
            }
            (name, binding)
        }
    };
    // Without a key-flags subpacket (very old keys) the algorithm decides, as in GnuPG.
    if let Some(b) = binding {
        let has_flags = b.config().is_some_and(|c| {
            c.hashed_subpackets()
                .any(|p| matches!(p.data, pgp::packet::SubpacketData::KeyFlags(_)))
        });
        if has_flags && !b.key_flags().sign() {
            return Some(format!(
                "key {name} is not allowed to sign (its key flags lack the signing capability)"
            ));
        }
    }
    None
}

fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(SystemTime::from))
}

fn expired(
    kind: &str,
    name: &str,
    created: Timestamp,
    self_sig: Option<&Signature>,
    now: SystemTime,
) -> Option<String> {
    let lifetime = self_sig?.key_expiration_time()?;
    if lifetime.as_secs() == 0 {
        return None;
    }
    let until = SystemTime::from(created) + Duration::from_secs(u64::from(lifetime.as_secs()));
    (now >= until).then(|| {
        let label = if kind.is_empty() {
            name.to_string()
        } else {
            format!("{kind} {name}")
        };
        format!(
            "{label} expired on {}: ask its owner for a renewed key or a signature by a current one",
            humantime_date(until)
        )
    })
}

/// `YYYY-MM-DD` in UTC.
fn humantime_date(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| "an unrepresentable date".into())
}
